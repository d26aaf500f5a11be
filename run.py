"""Train an embedding model from a decoder LLM, as one JSON config says.

    accelerate launch run.py --config configs/config.f2llm.json                      # GPUs (see configs/accelerate_config.yaml)
    accelerate launch --config_file configs/accelerate_config.yaml run.py --config configs/config.mrl_spread.bi_mean.json
    python run.py --config configs/cpu/smollm2.mrl_spread.bi_mean.json               # one CPU process
    accelerate launch --config_file configs/accelerate_cpu.yaml run.py --config configs/cpu/tiny.f2llm.json   # 2 CPU processes
    python run.py --config configs/cpu/smollm2.f2llm.json --resume                   # continue from the newest complete step_*
    python run.py --config configs/cpu/smollm2.f2llm.json --overwrite                # start that run over (deletes it)
    python run.py --config configs/x.json --set learning_rate=1e-4 --set mrl_dims=[64,128]
    python run.py --chain configs/cpu/smollm2.chain.json                             # stages: MNTP -> supervised -> merge
    python run.py --config configs/cpu/smollm2.recipe.json --check                  # validate only: print the resolved config
    python run.py --chain configs/cpu/smollm2.distill.chain.json --check             # ... or every stage of a chain

Writes ``output_dir/experiment_id/``: ``config.json`` (resolved), ``training_log.jsonl`` (one line per step),
``validation_log.jsonl``, ``step_N/`` checkpoints (model or adapter, tokenizer, config, optimizer, scheduler,
RNG, data position), ``final/`` (loads in transformers, sentence-transformers and ``evaluate_mteb.py``) and
``training_summary.json``; TensorBoard scalars go to ``tb_dir/experiment_id``.
"""
from __future__ import annotations

import argparse
import sys

from l2e.core.errors import run_main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="flat JSON config (see configs/)")
    what.add_argument("--chain", help="a chain of stages: training configs and merges (e.g. configs/cpu/smollm2.chain.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key; VALUE is parsed as JSON when it can be (repeatable)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                   help="continue from a step_* checkpoint: 'latest' (default when given alone: the newest "
                   "complete one) or a path")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in output_dir/experiment_id (refused otherwise)")
    p.add_argument("--check", action="store_true",
                   help="only check: resolve the config (or every stage of a chain), validate keys, values and "
                   "paths, print the resolved config as JSON and exit 0 (or one error line and exit 2); loads no "
                   "model and writes nothing")
    p.add_argument("--no_path_check", action="store_true",
                   help="with --check: keys and values only, not whether the data and model paths exist yet (what "
                   "CI checks on a clean clone, where the tokenized data is not made)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check:
        return run_main(lambda: check(args))
    return run_main(lambda: chain(args) if args.chain else train(args))


def check(args: argparse.Namespace) -> int:
    """``--check``: every problem a run would meet before its first step, without loading a model."""
    import json

    from l2e.config import load_config
    from l2e.train.chain import resolved_stages

    paths = not args.no_path_check
    if args.chain:
        resolved = resolved_stages(args.chain, check_paths=paths)  # {stage: resolved config, or the merge spec}
    else:
        resolved = load_config(args.config, args.set, check_paths=paths).to_dict()
    print(json.dumps(resolved, indent=2))
    return 0


def chain(args: argparse.Namespace) -> int:
    from l2e.train.chain import run_chain

    for summary in run_chain(args.chain, resume=args.resume):  # every stage checked before the first runs
        print(f"done: stage {summary['stage']!r}, model in {summary['final_dir']}")
    return 0


def train(args: argparse.Namespace) -> int:
    from l2e.config import load_config

    cfg = load_config(args.config, args.set)  # every config problem, before any model loads
    from l2e.train.trainer import Trainer

    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    try:
        trainer.setup()
        trainer.train()
        summary = trainer.cleanup()
    finally:
        trainer.close()  # the run folder's lock, also when a step fails
    if summary:
        what = "LoRA adapter" if summary["final_is_adapter"] else "model"
        print(f"done: {summary['steps']} steps in {summary['train_time_s']:.0f}s, {what} in {summary['final_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
