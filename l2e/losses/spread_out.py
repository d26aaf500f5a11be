"""Spread-out regulariser: Wang & Isola's uniformity of the embeddings on the unit sphere."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from l2e.losses.base import ContrastiveBatch, Term, register


def uniformity(x: torch.Tensor, t: float) -> torch.Tensor:
    """``log mean_{i<j} exp(-t * ||x̂_i - x̂_j||²)`` over the rows of ``x`` (P, D), P >= 2; a scalar."""
    x = F.normalize(x, dim=-1)
    # For unit vectors ||a - b||² = 2 - 2 a·b: smooth everywhere, unlike pdist's norm at coincident points.
    sq = 2 - 2 * x @ x.T  # (P, P)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    return torch.logsumexp(-t * sq[i, j], dim=0) - math.log(i.numel())


def spread_out(*, t: float = 2.0) -> Callable[[ContrastiveBatch], torch.Tensor]:
    """Uniformity loss (Wang & Isola 2020), a.k.a. spread-out or global orthogonal regularisation.

    ``log mean_{i<j} exp(-t * ||x̂_i - x̂_j||²)`` over all normalised queries and positives of the batch
    together (every rank's, with cross-device negatives). Lower is more uniform: it pushes the embeddings
    apart over the sphere, which keeps truncated (Matryoshka) prefixes from collapsing. Ranges over
    ``[-4t, 0]``.

    Args:
        t: the kernel's sharpness (``spread_t``; Wang & Isola use 2).

    Inputs (through :class:`ContrastiveBatch`): ``q_all``, ``p_all`` (N, D), un-normalised.

    Not a sum over rows: every rank computes the same value on the gathered batch (see ``base``).

    Reference: Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere" (ICML).
    """

    def term(batch: ContrastiveBatch) -> torch.Tensor:
        return uniformity(torch.cat([batch.q_all, batch.p_all]), t)

    return term


@register("spread_out")
def build(cfg) -> Optional[Term]:
    """``spread_enabled``: ``spread_weight * uniformity`` at every Matryoshka size, sharpness ``spread_t``."""
    if not cfg.spread_enabled:
        return None
    return Term("spread", spread_out(t=cfg.spread_t), cfg.spread_weight, gathered=True)
