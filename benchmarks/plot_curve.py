"""Learning curve of a run as a PNG: training loss per step and validation nDCG@10 / loss.

    python benchmarks/plot_curve.py output/smollm2.demo --out docs/learning_curve.png
    python benchmarks/plot_curve.py output/ablation30/ablation.a output/ablation30/ablation.c --out curves.png

Reads each run's training_log.jsonl and validation_log.jsonl (written by run.py).
"""
from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (output_dir/experiment_id)")
    p.add_argument("--out", default="learning_curve.png")
    args = p.parse_args(argv)
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for run in args.runs:
        name = os.path.basename(os.path.normpath(run))
        train = read(os.path.join(run, "training_log.jsonl"))
        if not train:
            raise SystemExit(f"error: {run}/training_log.jsonl missing or empty")
        # The full-size InfoNCE term is comparable across mixes; "loss" also sums MRL and spread-out terms.
        key = "infonce" if "infonce" in train[0] else "loss"
        ax_loss.plot([r["step"] for r in train], [r[key] for r in train], label=name, alpha=0.8)
        val = read(os.path.join(run, "validation_log.jsonl"))
        key = "ndcg_at_10" if any("ndcg_at_10" in r for r in val) else None
        if key:
            pts = [(r["step"], r[key]) for r in val if key in r]
            ax_val.plot(*zip(*pts), marker="o", label=name)
            for r in val:  # training minutes so far (net of validation), where run.py logged them
                if key in r and "train_s" in r:
                    ax_val.annotate(f"{r['train_s'] / 60:.0f} min", (r["step"], r[key]), fontsize=7,
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
