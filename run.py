"""Train an embedding model from a decoder LLM, as one JSON config says.

    accelerate launch run.py --config configs/config.f2llm.json                      # GPUs (see configs/accelerate_config.yaml)
    accelerate launch --config_file configs/accelerate_config.yaml run.py --config configs/config.mrl_spread.bi_mean.json
    python run.py --config configs/cpu/smollm2.mrl_spread.bi_mean.json               # one CPU process
    accelerate launch --config_file configs/accelerate_cpu.yaml run.py --config configs/cpu/tiny.f2llm.json   # 2 CPU processes
    python run.py --config configs/cpu/smollm2.f2llm.json --resume                   # continue from the latest step_*
    python run.py --config configs/x.json --set learning_rate=1e-4 --set mrl_dims=[64,128]

Writes ``output_dir/experiment_id/``: ``config.json`` (resolved), ``training_log.jsonl`` (one line per step),
``validation_log.jsonl``, ``step_N/`` checkpoints (model or adapter, tokenizer, config, optimizer, scheduler,
RNG, data position), ``final/`` (loads in transformers, sentence-transformers and ``evaluate_mteb.py``) and
``training_summary.json``; TensorBoard scalars go to ``tb_dir/experiment_id``.
"""
from __future__ import annotations

import argparse
import sys

from l2e.config import ConfigError, load_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="flat JSON config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key; VALUE is parsed as JSON when it can be (repeatable)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                   help="continue from a step_* checkpoint: 'latest' (default when given alone) or a path")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)  # every config problem, before any model loads
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from l2e.data import DataError
    from l2e.trainer import Trainer, TrainingError

    trainer = Trainer(cfg, resume=args.resume)
    try:
        trainer.setup()
        trainer.train()
        summary = trainer.cleanup()
    except (ConfigError, DataError, TrainingError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary:
        print(f"done: {summary['steps']} steps in {summary['train_time_s']:.0f}s, model in {summary['final_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
