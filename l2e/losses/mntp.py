"""Masked next-token prediction (MNTP, LLM2Vec): predict each masked token from the state one position before it.

LLM2Vec (BehnamGhader et al. 2024, arXiv 2404.05961) adapts a decoder to bidirectional attention by masking
tokens (``l2e.data.batching.MntpMasking``) and training the model to recover token i from the output at position
i - 1 -- the shift its causal-LM loss already has (``logits[..., :-1]`` against ``labels[..., 1:]``), so the
pre-trained LM head keeps its job. The LM head is the input embedding matrix (tied in SmolLM2 and Qwen3).
Only the chosen positions are projected to the vocabulary: (n_masked, vocab), not (tokens, vocab).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from l2e.losses.base import Term, register


@dataclass(frozen=True)
class TokenBatch:
    """What a token-level term reads: one step's token states, the masked positions' labels and the LM head."""

    hidden: torch.Tensor  # (B, S, H)
    labels: torch.Tensor  # (B, S), -100 where nothing is predicted
    lm_weight: torch.Tensor  # (V, H), the input embedding matrix (tied LM head)


@register("mntp")
def build(cfg) -> Optional[Term]:
    """The term of the ``mntp`` objective (``l2e.train.objectives.mntp``); it reads token states, not embeddings,
    so contrastive batches never see it (``batch="tokens"``)."""
    return Term("mntp", lambda b: mntp_loss(b.hidden, b.labels, b.lm_weight), per_dim=False, batch="tokens")


def mntp_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_weight: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked positions. hidden (B, S, H), labels (B, S) with -100 = not masked,
    lm_weight (V, H). Token i is predicted from ``hidden[:, i - 1]``."""
    target = labels[:, 1:]  # (B, S-1)
    chosen = target != -100
    if not chosen.any():  # a batch of very short texts: nothing to predict, no gradient, no NaN
        return hidden.sum() * 0.0
    logits = hidden[:, :-1][chosen].to(lm_weight.dtype) @ lm_weight.T  # (n, V)
    return F.cross_entropy(logits.float(), target[chosen])
