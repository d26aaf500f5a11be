"""Masked next-token prediction (MNTP, LLM2Vec): predict each masked token from the state one position before it.

LLM2Vec (BehnamGhader et al. 2024, arXiv 2404.05961) adapts a decoder to bidirectional attention by masking
tokens (``l2e.data.batching.MntpMasking``) and training the model to recover token i from the output at position
i - 1 -- the shift its causal-LM loss already has (``logits[..., :-1]`` against ``labels[..., 1:]``), so the
pre-trained LM head keeps its job. The LM head is the input embedding matrix (tied in SmolLM2 and Qwen3).
Only the chosen positions are projected to the vocabulary: (n_masked, vocab), not (tokens, vocab).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mntp_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_weight: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked positions. hidden (B, S, H), labels (B, S) with -100 = not masked,
    lm_weight (V, H). Token i is predicted from ``hidden[:, i - 1]``."""
    target = labels[:, 1:]  # (B, S-1)
    chosen = target != -100
    if not chosen.any():  # a batch of very short texts: nothing to predict, no gradient, no NaN
        return hidden.sum() * 0.0
    logits = hidden[:, :-1][chosen].to(lm_weight.dtype) @ lm_weight.T  # (n, V)
    return F.cross_entropy(logits.float(), target[chosen])
