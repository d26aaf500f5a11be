#!/usr/bin/env bash
# GPU check (one GPU, < 8 minutes): bf16 training steps of a tiny model and of a Qwen3-0.6B-shaped model (random
# weights from its config) with sdpa and flash_attention_2 (when flash-attn is installed), DeepSpeed ZeRO-2 through
# the shipped accelerate config, QLoRA 4-bit, GradCache. Prints seconds per step, MFU and peak GPU memory per run
# (table and JSON in $OUT, default output/gpu_check).
#
#   pip install -e ".[gpu]"            # deepspeed, bitsandbytes, flash-attn (each row is skipped if missing)
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
