"""Paired bootstrap of one scored model against others, query by query (l2e.retrieval.stats), as a markdown table.

    python benchmarks/compare_runs.py docs/results/per_query/distill-stage2.dim576.dev.json \
        docs/results/per_query/*baseline*.json docs/results/per_query/bm25.dev.json

Each file is a ``per_query/*.json`` written by ``evaluate_mteb.py`` (``{"scores": {query id: nDCG@10}, ...}``).
The first is the row; each other file is a base it is compared with. Δ = row - base, 95% percentile interval of
10,000 seeded resamples of the queries; "gain" / "loss" only when the interval excludes 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from l2e.retrieval.stats import paired_bootstrap  # noqa: E402


def load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)["scores"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: {path}: not a per-query score file of evaluate_mteb.py ({e})") from None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("row")
    p.add_argument("bases", nargs="+")
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument("--json_out", default="")
    args = p.parse_args(argv)
    row = load(args.row)
    mean = sum(row.values()) / len(row)
    results = []
    print(f"row: {args.row} (nDCG@10 {mean:.4f}, {len(row)} queries)\n")
    print("| base | base nDCG@10 | Δ row - base | 95% CI | verdict |")
    print("| --- | ---: | ---: | --- | --- |")
    for path in args.bases:
        base = load(path)
        r = paired_bootstrap(row, base, resamples=args.resamples)
        results.append({"base": path, "base_ndcg_at_10": sum(base.values()) / len(base), **r})
        print(f"| {os.path.basename(path)} | {results[-1]['base_ndcg_at_10']:.4f} | {r['delta']:+.4f} | "
              f"[{r['low']:+.4f}, {r['high']:+.4f}] | {r['verdict']} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"row": args.row, "row_ndcg_at_10": mean, "comparisons": results}, f, indent=2)


if __name__ == "__main__":
    main()
