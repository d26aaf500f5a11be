"""Tiny random decoder models of real architectures, for CPU smoke runs and tests.

    python -m l2e.tiny --arch qwen3 --out output/tiny-qwen3          # what configs/cpu/tiny.*.json expect
    python -m l2e.tiny --arch deepseek_v3 --out output/tiny-deepseek-v3
    python -m l2e.tiny --arch qwen3-0.6b --out output/qwen3-0.6b-random   # Qwen3-0.6B's shape, for GPU timings

Random weights, the real model classes (Qwen3, DeepSeek-V3 with MLA attention and MoE, Llama) and the real
SmolLM2 tokenizer (vocab 49152), so every code path of a full-size run is exercised in seconds.
Hidden size 64, so Matryoshka dims such as 16 and 32 fit.
"""
from __future__ import annotations

import argparse
import os

import torch

# The repository root is three levels up (l2e/model/tiny.py); the tokenizer asset ships with the tests.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER_DIR = os.path.join(_REPO, "tests", "assets", "smollm2_tokenizer")
VOCAB, HIDDEN, EOS_ID = 49152, 64, 2


def tiny_configs() -> dict:
    """model_type -> a fresh tiny ``PretrainedConfig``."""
    from transformers import DeepseekV3Config, LlamaConfig, Qwen3Config

    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=512, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
                  bos_token_id=1)
    return {
        "qwen3": Qwen3Config(**common, num_key_value_heads=2, head_dim=16),
        # Qwen3-0.6B's published shape (28 layers, hidden 1024, 16/8 heads of 128, MLP 3072, vocab 151936), random
        # weights: real step times and memory on a GPU without downloading the model.
        "qwen3-0.6b": Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                  num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                  max_position_embeddings=4096, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
                                  bos_token_id=1, tie_word_embeddings=True),
        "llama": LlamaConfig(**common, num_key_value_heads=2),
        # SmolLM2's head width (64): vLLM's CPU attention kernels refuse the tiny models' head_dim of 16.
        "llama-h64": LlamaConfig(**{**common, "hidden_size": 128, "num_attention_heads": 2}, num_key_value_heads=1,
                                 head_dim=64),
        # DeepSeek-V3 keeps its real shape: MLA attention (low-rank q and kv) and a MoE layer after one dense one.
        "deepseek_v3": DeepseekV3Config(
            **common, num_key_value_heads=4, moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
            n_shared_experts=1, n_group=1, topk_group=1, first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=16,
            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        ),
    }


def save_tiny_model(model_type: str, out_dir: str, tokenizer_dir: str = TOKENIZER_DIR, seed: int = 0) -> str:
    """Write a seeded random ``model_type`` model plus tokenizer to ``out_dir`` (reproducible)."""
    from transformers import AutoModel, AutoTokenizer

    configs = tiny_configs()
    if model_type not in configs:
        raise ValueError(f"unknown tiny architecture {model_type!r}; choose one of {', '.join(configs)}")
    torch.manual_seed(seed)
    model = AutoModel.from_config(configs[model_type], dtype=torch.float32)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="qwen3", help="qwen3, deepseek_v3, llama, llama-h64 (head width 64, for vLLM) or qwen3-0.6b")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(save_tiny_model(args.arch, args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
