#!/usr/bin/env bash
# Issue 28's tables on one machine in one go: quantized dense search (dims x precision), sparse through the inverted
# index, long documents (truncated / whole / maxp / late chunking), and exhaustive vs indexed search timings.
#   benchmarks/search_tables.sh [CKPT] [DATA] [OUT] [HEADS_CKPT]
# defaults: the wave-3 model, the full dev set, docs/results/search, and for the search timings a model with trained
# sparse and ColBERT heads (the ablation's `heads` row; without one bench_search adds an untrained ColBERT projection)
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-output/smollm2.distill/lexical/final}
DATA=${2:-../shared/data/dev}
OUT=${3:-docs/results/search}
HEADS_CKPT=${4:-output/ablation/heads/final}
[ -d "$HEADS_CKPT" ] || HEADS_CKPT=$CKPT
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
# 1. dims x precision (nDCG@10, index bytes per document, ms per query), and the sparse head through the inverted index
$PY evaluate_mteb.py --ckpt_dir "$CKPT" --data_dir "$DATA" --precision auto --dims 128,256,576 \
    --embedding_precision float32,int8,binary --rescore 100 --reps sparse --output_folder "$OUT/quantized"
# 2. long documents: truncated at 64 tokens vs max-passage over 64-token chunks of the whole document
$PY evaluate_mteb.py --ckpt_dir "$CKPT" --data_dir "$DATA" --precision auto --max_length 64 --reps "" \
    --doc_chunking maxp --chunk_tokens 64 --output_folder "$OUT/chunks64"
# 3. ... vs one vector of up to 512 tokens, and late chunking: 64-token chunks pooled from 512-token windows
$PY evaluate_mteb.py --ckpt_dir "$CKPT" --data_dir "$DATA" --precision auto --max_length 512 --reps "" \
    --doc_chunking late --chunk_tokens 64 --output_folder "$OUT/late512"
# 4. search time after encoding, exhaustive vs indexed, and the indexed search's recall of the exhaustive top 100
$PY benchmarks/bench_search.py --ckpt_dir "$HEADS_CKPT" --data_dir "$DATA" --out "$OUT/bench_search.json"
