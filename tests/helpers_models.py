"""Tiny random decoder models for tests: real architectures, random weights, the real SmolLM2 tokenizer.

``tiny_qwen3()``, ``tiny_deepseek_v3()`` and ``tiny_llama()`` each return a local folder (config.json,
safetensors weights, tokenizer files) that ``build_model`` / ``AutoModel.from_pretrained`` load like any real
checkpoint. Each folder is written once per test session (cached) into a temporary directory removed at exit.
Vocab is 49152 to match the tokenizer; hidden size 64 so MRL dims such as 16 and 32 fit.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

from l2e.config import Config, from_dict
from l2e.model.tiny import EOS_ID, HIDDEN, TOKENIZER_DIR, VOCAB, save_tiny_model, tiny_configs  # noqa: F401

# EOS_ID: "<|im_end|>", also the pad token of the SmolLM2 tokenizer. The builders also back `python -m l2e.tiny`.

_ROOT = []


def _root() -> str:
    if not _ROOT:
        _ROOT.append(tempfile.mkdtemp(prefix="l2e_tiny_models_"))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return _ROOT[0]


@functools.lru_cache(maxsize=None)
def tiny_model_dir(model_type: str) -> str:
    """A saved folder with random weights for ``model_type`` and the SmolLM2 tokenizer (seeded: reproducible)."""
    path = os.path.join(_root(), model_type)
    save_tiny_model(model_type, path, TOKENIZER_DIR)
    return path


def tiny_qwen3() -> str:
    return tiny_model_dir("qwen3")


def tiny_deepseek_v3() -> str:
    return tiny_model_dir("deepseek_v3")


def tiny_llama() -> str:
    return tiny_model_dir("llama")


TINY_MODELS = {"qwen3": tiny_qwen3, "deepseek_v3": tiny_deepseek_v3, "llama": tiny_llama}


def tiny_config(model_type: str = "qwen3", **fields) -> Config:
    """A validated ``Config`` pointing at a tiny model folder; ``fields`` override any config key."""
    raw = {"model_path": TINY_MODELS[model_type](), "max_seq_length": 64, **fields}
    return from_dict(raw, source="tiny_config", check_paths=False)
