"""Learning curve of a run as a PNG: training loss per step and validation nDCG@10 / loss.

    python benchmarks/plot_curve.py output/smollm2.demo --out docs/learning_curve.png
    python benchmarks/plot_curve.py output/ablation30/ablation.a output/ablation30/ablation.c --out curves.png
    python benchmarks/plot_curve.py --chain configs/cpu/smollm2.distill.chain.json --out docs/distill_learning_curve.png

Reads each run's training_log.jsonl and validation_log.jsonl (written by run.py). With ``--chain`` the training
stages of a chain are drawn end to end: stage k's steps and minutes continue where stage k-1's ended.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from anywhere: l2e is the checkout's own
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def chain_runs(chain_path: str) -> list:
    """``[(stage, run folder, step offset, seconds offset)]`` of a chain's training stages, in order; a stage's
    offsets are the steps and training seconds (``steps_time_s``, net of validation) of the stages before it."""
    from l2e.train.chain import load_chain

    chain = load_chain(chain_path)
    runs, steps, seconds = [], 0, 0.0
    for stage in chain["stages"]:
        if "config" not in stage:
            continue  # a merge: no training curve
        folder = os.path.join(chain["output_dir"], stage["name"])
        train = read(os.path.join(folder, "training_log.jsonl"))
        if not train:
            break  # this stage has not run yet: the curve ends at the last one that did
        runs.append((stage["name"], folder, steps, seconds))
        summary = os.path.join(folder, "training_summary.json")
        steps += max(r["step"] for r in train)
        seconds += json.load(open(summary)).get("steps_time_s", 0.0) if os.path.isfile(summary) else 0.0
    if not runs:
        raise SystemExit(f"error: {chain_path}: no stage of the chain has a training_log.jsonl yet")
    return runs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run folders (output_dir/experiment_id)")
    p.add_argument("--chain", help="a chain file: its training stages drawn end to end")
    p.add_argument("--out", default="learning_curve.png")
    args = p.parse_args(argv)
    if bool(args.runs) == bool(args.chain):
        p.error("give run folders or --chain, not both")
    runs = chain_runs(args.chain) if args.chain else [
        (os.path.basename(os.path.normpath(r)), r, 0, 0.0) for r in args.runs]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run, step0, seconds0 in runs:
        train = read(os.path.join(run, "training_log.jsonl"))
        if not train:
            raise SystemExit(f"error: {run}/training_log.jsonl missing or empty")
        # The full-size InfoNCE term is comparable across mixes; "loss" also sums MRL and spread-out terms.
        key = "infonce" if "infonce" in train[0] else "loss"
        ax_loss.plot([step0 + r["step"] for r in train], [r[key] for r in train], label=name, alpha=0.8)
        if step0:
            for ax in (ax_loss, ax_val):
                ax.axvline(step0, color="grey", linestyle=":", linewidth=1)
        val = read(os.path.join(run, "validation_log.jsonl"))
        key = "ndcg_at_10" if any("ndcg_at_10" in r for r in val) else None
        if key:
            pts = [(step0 + r["step"], r[key]) for r in val if key in r]
            ax_val.plot(*zip(*pts), marker="o", label=name)
            for r in val:  # training minutes so far (net of validation), where run.py logged them
                if key in r and "train_s" in r:
                    ax_val.annotate(f"{(seconds0 + r['train_s']) / 60:.0f} min", (step0 + r["step"], r[key]), fontsize=7,
                                    textcoords="offset points", xytext=(4, -10))
    ax_loss.set(xlabel="optimizer step", ylabel="InfoNCE (full size)", title="training loss")
    ax_val.set(xlabel="optimizer step", ylabel="nDCG@10", title="validation nDCG@10 (eval_data_dir)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
