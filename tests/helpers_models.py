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

import torch
from transformers import AutoModel, AutoTokenizer, DeepseekV3Config, LlamaConfig, Qwen3Config

from l2e.config import Config, from_dict

TOKENIZER_DIR = os.path.join(os.path.dirname(__file__), "assets", "smollm2_tokenizer")
VOCAB = 49152
HIDDEN = 64
EOS_ID = 2  # "<|im_end|>", also the pad token of the SmolLM2 tokenizer

_COMMON = dict(
    vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=512, eos_token_id=EOS_ID, pad_token_id=EOS_ID, bos_token_id=1,
)


def tiny_configs() -> dict:
    """model_type -> a fresh tiny ``PretrainedConfig``."""
    return {
        "qwen3": Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=16),
        "llama": LlamaConfig(**_COMMON, num_key_value_heads=2),
        # DeepSeek-V3 keeps its real shape: MLA attention (low-rank q and kv) and a MoE layer after one dense one.
        "deepseek_v3": DeepseekV3Config(
            **_COMMON, num_key_value_heads=4, moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
            n_shared_experts=1, n_group=1, topk_group=1, first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=16,
            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        ),
    }


_ROOT = []


def _root() -> str:
    if not _ROOT:
        _ROOT.append(tempfile.mkdtemp(prefix="l2e_tiny_models_"))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return _ROOT[0]


@functools.lru_cache(maxsize=None)
def tiny_model_dir(model_type: str) -> str:
    """A saved folder with random weights for ``model_type`` and the SmolLM2 tokenizer (seeded: reproducible)."""
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_configs()[model_type], dtype=torch.float32)
    path = os.path.join(_root(), model_type)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
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
