"""Knowledge distillation from a teacher's scores of each query's candidates (FlagEmbedding)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from l2e.losses.base import ContrastiveBatch, LossError, Term, register


def kd_rows(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, pos_scores: torch.Tensor,
            neg_scores: torch.Tensor, *, temperature: float, kd_temperature: float) -> torch.Tensor:
    """Per-row ``KL(teacher || student)`` over [positive, hard negatives]; returns (B,).

    q, p (B, D), n (B, K, D) un-normalised; pos_scores (B,), neg_scores (B, K) teacher scores.
    """
    q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))
    student = torch.cat([(q * p).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", q, n)], dim=1)  # (B, 1+K)
    student = F.log_softmax(student / temperature, dim=1)
    teacher = torch.cat([pos_scores[:, None], neg_scores], dim=1).to(student.dtype).detach()  # (B, 1+K)
    teacher = F.log_softmax(teacher / kd_temperature, dim=1)
    return (teacher.exp() * (teacher - student)).sum(dim=1)


def kd(*, temperature: float, kd_temperature: float = 1.0) -> Callable[[ContrastiveBatch], torch.Tensor]:
    """Distillation loss: KL divergence from the teacher's to the student's distribution over the candidates.

    For each query, the teacher's scores of [positive, hard negatives] (``pos_scores``, ``neg_scores``, e.g.
    from a cross-encoder) give ``softmax(scores / kd_temperature)``; the student's cosine similarities give
    ``softmax(cos / temperature)``; the loss is ``KL(teacher || student)``, averaged over queries. In-batch
    candidates are not used: the teacher never scored them.

    FlagEmbedding (``kd_loss_type="kl_div"``) writes it as ``-sum(teacher * log student)``, which is this KL
    plus the teacher's entropy: a constant, so the gradients are the same; ours is 0 when the student agrees.

    Args:
        temperature: the student's, as in InfoNCE (``cfg.temperature``).
        kd_temperature: softens (> 1) or sharpens (< 1) the teacher's distribution.

    Inputs (through :class:`ContrastiveBatch`): ``q``, ``p`` (B, D), ``n`` (B, K, D); ``pos_scores`` (B,),
    ``neg_scores`` (B, K).

    Reference: Xiao et al. 2023, C-Pack / FlagEmbedding (BGE).
    """

    def term(batch: ContrastiveBatch) -> torch.Tensor:
        b, k = batch.n.shape[:2]
        ok = batch.pos_scores is not None and batch.neg_scores is not None
        if not ok or tuple(batch.pos_scores.shape) != (b,) or tuple(batch.neg_scores.shape) != (b, k) or k == 0:
            got = [None if s is None else tuple(s.shape) for s in (batch.pos_scores, batch.neg_scores)]
            raise LossError(f"kd needs teacher pos_scores of shape ({b},) and neg_scores of shape ({b}, {k}) "
                             f"with at least one hard negative; got {got[0]} and {got[1]}")
        if not (torch.isfinite(batch.pos_scores).all() and torch.isfinite(batch.neg_scores).all()):
            raise LossError("kd: a teacher score is NaN or infinite; tokenize_data.py refuses such rows, so the "
                            "tokenized data was written by something else -- re-tokenize it")
        rows = kd_rows(batch.q, batch.p, batch.n, batch.pos_scores.to(batch.q.device),
                       batch.neg_scores.to(batch.q.device), temperature=temperature, kd_temperature=kd_temperature)
        return rows.sum() * batch.row_weight

    return term


@register("kd")
def build(cfg) -> Optional[Term]:
    """``kd_enabled``: ``kd_weight * KL(teacher || student)`` at full size, on datasets with teacher scores."""
    if not cfg.kd_enabled:
        return None
    return Term("kd", kd(temperature=cfg.temperature, kd_temperature=cfg.kd_temperature), cfg.kd_weight,
                per_dim=False, needs_teacher=True)
