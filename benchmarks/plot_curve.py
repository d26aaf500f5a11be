"""Learning curve of a run as a PNG: training loss per step and validation nDCG@10 / loss.

    python benchmarks/plot_curve.py output/smollm2.demo --out docs/learning_curve.png
    python benchmarks/plot_curve.py output/ablation30/ablation.a output/ablation30/ablation.c --out curves.png
    python benchmarks/plot_curve.py --chain configs/cpu/smollm2.distill.chain.json --out docs/distill_learning_curve.png

Reads each run's training_log.jsonl and validation_log.jsonl (written by run.py). With ``--chain`` the training
stages of a chain are drawn end to end: stage k's steps and minutes continue where stage k-1's ended. Panels: the
training loss; validation nDCG@10 where a run scored eval_data_dir; resident memory where a run logged it.
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
    logs = [(name, run, step0, seconds0, read(os.path.join(run, "training_log.jsonl")),
             read(os.path.join(run, "validation_log.jsonl"))) for name, run, step0, seconds0 in runs]
    for name, run, _, _, train, _ in logs:
        if not train:
            raise SystemExit(f"error: {run}/training_log.jsonl missing or empty")
    # Panels with something to draw: the loss always; validation nDCG@10 where a run scored eval_data_dir; resident
    # memory where a run logged it (run.py since 9bce7f9), e.g. to lay a bf16 run's memory beside an fp32 one's.
    with_val = any("ndcg_at_10" in r for *_, val in logs for r in val)
    with_mem = any("rss_gb" in r for *_, train, _ in logs for r in train)
    panels = 1 + with_val + with_mem
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax_loss = axes[0][0]
    ax_val = axes[0][1] if with_val else None
    ax_mem = axes[0][-1] if with_mem else None
    for name, run, step0, seconds0, train, val in logs:
        # The full-size InfoNCE term is comparable across mixes; "loss" also sums MRL and spread-out terms.
        key = "infonce" if "infonce" in train[0] else "loss"
        ax_loss.plot([step0 + r["step"] for r in train], [r[key] for r in train], label=name, alpha=0.8)
        if step0:
            for ax in axes[0]:
                ax.axvline(step0, color="grey", linestyle=":", linewidth=1)
        memory = [r for r in train if "rss_gb" in r]
        if ax_mem is not None and memory:
            steps = [step0 + r["step"] for r in memory]
            line, = ax_mem.plot(steps, [r["rss_gb"] for r in memory], label=f"{name} (now)")
            ax_mem.plot(steps, [r["peak_rss_gb"] for r in memory], linestyle="--", color=line.get_color(),
                        label=f"{name} (peak so far)")
        if ax_val is not None and any("ndcg_at_10" in r for r in val):
            pts = [(step0 + r["step"], r["ndcg_at_10"]) for r in val if "ndcg_at_10" in r]
            ax_val.plot(*zip(*pts), marker="o", label=name)
            for r in val:  # training minutes so far (net of validation), where run.py logged them
                if "ndcg_at_10" in r and "train_s" in r:
                    ax_val.annotate(f"{(seconds0 + r['train_s']) / 60:.0f} min", (step0 + r["step"], r["ndcg_at_10"]),
                                    fontsize=7, textcoords="offset points", xytext=(4, -10))
    ax_loss.set(xlabel="optimizer step", ylabel="InfoNCE (full size)", title="training loss")
    if ax_val is not None:
        ax_val.set(xlabel="optimizer step", ylabel="nDCG@10", title="validation nDCG@10 (eval_data_dir)")
    if ax_mem is not None:
        ax_mem.set(xlabel="optimizer step", ylabel="GB", title="resident memory")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
