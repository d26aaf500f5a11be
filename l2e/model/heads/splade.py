"""``splade`` -- SPLADE (Formal et al. 2021): ``max_t log(1 + relu(logits_t))`` over the real tokens.

The logits come from the LM head (tied to the input embeddings in SmolLM2 / Qwen3); FLOPS regularisation
``sum_j mean_i(w_ij)^2`` (``l2e.losses.heads``). Exactly sentence-transformers' ``SpladePooling(max, relu)`` on the
same logits. The (tokens x vocab) logits are made one text at a time under activation checkpointing: only the
text's states are kept for backward. Score: dot product.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from l2e.model.heads.maths import splade_pool
from l2e.model.heads.registry import HeadSpec, register_head, sparse_vector_scores


class SpladeHead(nn.Module):
    """SPLADE over the LM head ``lm_weight`` (vocab, hidden), which the backbone owns (tied embeddings)."""

    def __init__(self, get_lm_weight):
        super().__init__()
        self._lm_weight = get_lm_weight  # a callable, not a parameter: the weights stay the backbone's

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        weight = self._lm_weight()
        rows = []
        for h, k in zip(hidden, keep):  # one text at a time: (S, V) logits, not (B, S, V)
            fn = lambda h, k: splade_pool((h @ weight.T)[None], k[None])[0]  # noqa: E731
            rows.append(checkpoint(fn, h, k, use_reentrant=False) if torch.is_grad_enabled() else fn(h, k))
        return torch.stack(rows)  # (B, V)


def _build(backbone, settings) -> SpladeHead:
    embeddings = backbone.get_input_embeddings()
    return SpladeHead(lambda: embeddings.weight)


SPEC = register_head(HeadSpec(
    name="splade", kind="sparse_vector", build=_build,
    encode=lambda head, hidden, input_ids, real, text: {"splade": head(hidden, real)},
    score=sparse_vector_scores("splade"), summary="SPLADE over the tied LM head, dot product",
    temperature=1.0, fusion_weight=0.3))
