"""InfoNCE with hard negatives, in-batch negatives, extra directions and false-negative masking."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from l2e.losses.base import ContrastiveBatch, LossError, Term, register

DIRECTIONS = ("q2p", "p2q", "q2q", "p2p")


def infonce_rows(batch: ContrastiveBatch, *, temperature: float, directions: Sequence[str] = ("q2p",),
                 mask_false_negatives: bool = True, false_negative_margin: float = -1.0,
                 positive_margin: float = 0.0) -> torch.Tensor:
    """Per-row InfoNCE ``-log softmax(scores)[positive]`` for this rank's queries; returns (B,).

    With ``batch.use_in_batch`` the candidates of query i are every positive and every hard negative in the
    (gathered) batch, plus the extra directions in one joint softmax (GTE); without it, only its own
    positive and hard negatives (F2LLM classification rows), and the extra directions are not used.
    ``false_negative_margin`` >= 0 also leaves out every candidate scoring above the positive's cosine plus
    that margin (Qwen3-Embedding's mask, 0.1 there); ``positive_margin`` is subtracted from the positive's
    cosine before the temperature (the additive margin of PaddleNLP's in-batch loss).
    """
    q = F.normalize(batch.q, dim=-1)  # (B, D)
    p = F.normalize(batch.p, dim=-1)  # (B, D)
    if not batch.use_in_batch:
        return _own_group_rows(q, p, F.normalize(batch.n, dim=-1), batch, temperature, mask_false_negatives,
                               false_negative_margin, positive_margin)
    rows = torch.arange(q.shape[0], device=q.device)
    label = batch.offset + rows  # (B,) column of each query's positive in p_all
    cands = F.normalize(torch.cat([batch.p_all, batch.n_all]), dim=-1)  # (N+M, D)
    q_all = F.normalize(batch.q_all, dim=-1)  # (N, D)
    blocks = [q @ cands.T]  # q2p: (B, N+M)
    masks = [_same_key(batch, "candidates", label, mask_false_negatives)]
    if "q2q" in directions:
        blocks.append(q @ q_all.T)  # (B, N): query i against the other queries
        mask = _same_key(batch, "queries", label, mask_false_negatives)
        mask[rows, label] = True  # a query is not its own negative
        masks.append(mask)
    if "p2q" in directions:
        blocks.append(p @ q_all.T)  # (B, N): positive i against every query; column label is q_i itself
        masks.append(_same_key(batch, "queries", label, mask_false_negatives))
    if "p2p" in directions:
        # Positive i against every passage of the other queries (their positives and hard negatives), as
        # sentence-transformers' doc_to_doc: the documents of query i itself are left out.
        blocks.append(p @ cands.T)  # (B, N+M)
        k = batch.n.shape[1]
        owner = torch.cat([torch.arange(batch.p_all.shape[0], device=q.device),
                           torch.arange(batch.n_all.shape[0], device=q.device) // max(k, 1)])  # (N+M,)
        mask = _same_key(batch, "candidates", label, mask_false_negatives) | (owner[None, :] == label[:, None])
        masks.append(mask)
    cos = torch.cat(blocks, dim=1)  # (B, C)
    mask = torch.cat(masks, dim=1)
    positive = cos[rows, label]  # (B,)
    if false_negative_margin >= 0:
        above = cos.detach() > positive.detach()[:, None] + false_negative_margin
        above[rows, label] = False
        mask = mask | above
    if positive_margin:
        cos = cos.clone()
        cos[rows, label] = positive - positive_margin
    scores = (cos / temperature).masked_fill(mask, float("-inf"))
    return torch.logsumexp(scores, dim=1) - scores[rows, label]


def _same_key(batch: ContrastiveBatch, columns: str, label: torch.Tensor, on: bool) -> torch.Tensor:
    """(B, C) True where column c is the same passage as query i's positive (but not the positive itself).

    ``columns``: "candidates" (every positive, then every hard negative) or "queries" (keyed by their
    positives). The same passage can be the positive of two queries in a batch (or another query's hard
    negative); counting it as a negative would push the query away from its own positive.
    """
    width = batch.p_all.shape[0] + (batch.n_all.shape[0] if columns == "candidates" else 0)
    if not on:
        return torch.zeros((label.shape[0], width), dtype=torch.bool, device=label.device)
    keys = torch.cat([batch.pos_keys_all, batch.neg_keys_all]) if columns == "candidates" else batch.pos_keys_all
    rows = torch.arange(label.shape[0], device=label.device)
    mask = keys[None, :] == batch.pos_keys[:, None]  # (B, C)
    mask[rows, label] = False
    return mask


def _own_group_rows(q, p, n, batch: ContrastiveBatch, temperature: float, mask_on: bool,
                    false_negative_margin: float = -1.0, positive_margin: float = 0.0) -> torch.Tensor:
    """(B,) loss over [own positive, own hard negatives] only."""
    cos = torch.cat([(q * p).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", q, n)], dim=1)  # (B, 1+K)
    excluded = torch.zeros_like(cos, dtype=torch.bool)
    if mask_on and n.shape[1]:
        excluded[:, 1:] = batch.neg_keys == batch.pos_keys[:, None]  # (B, K)
    if false_negative_margin >= 0:
        excluded[:, 1:] |= cos.detach()[:, 1:] > cos.detach()[:, :1] + false_negative_margin
    if positive_margin:
        cos = torch.cat([cos[:, :1] - positive_margin, cos[:, 1:]], dim=1)
    scores = (cos / temperature).masked_fill(excluded, float("-inf"))
    return torch.logsumexp(scores, dim=1) - scores[:, 0]


def infonce(*, temperature: float, directions: Sequence[str] = ("q2p",), mask_false_negatives: bool = True,
            false_negative_margin: float = -1.0, positive_margin: float = 0.0
            ) -> Callable[[ContrastiveBatch], torch.Tensor]:
    """InfoNCE over cosine similarities, a.k.a. MultipleNegativesRankingLoss, in-batch softmax loss, NT-Xent.

    For each query ``q_i`` with positive ``p_i``::

        loss_i = -log( exp(s(q_i, p_i) / T) / sum_{c in C_i} exp(s(q_i, c) / T) )

    with ``s`` the cosine similarity. ``C_i`` holds ``p_i``, the query's own hard negatives and, with in-batch
    negatives, every other positive and hard negative of the batch (of every rank with cross-device
    negatives). Extra directions add terms to the same denominator (GTE's "improved contrastive loss"):
    ``"q2q"`` the other queries ``s(q_i, q_j), j != i``; ``"p2q"`` every query against the positive,
    ``s(q_j, p_i)`` (``j = i`` included, as in GTE and sentence-transformers); ``"p2p"`` every passage of the
    other queries, ``s(p_i, d)`` (GTE's document-document term, sentence-transformers' ``doc_to_doc``;
    Qwen3-Embedding's denominator is q2p + q2q + p2p).
    With false-negative masking, a candidate whose passage key equals ``p_i``'s (and, in q2q/p2q/p2p, a query
    or passage keyed by ``p_i``) is left out of ``C_i``, not counted as a negative.

    Args:
        temperature: T, scores are ``cos / T`` (``scale = 1 / T`` in sentence-transformers; F2LLM uses 0.05).
        directions: ``"q2p"`` (required) plus any of ``"p2q"``, ``"q2q"``, ``"p2p"``; the extra directions need
            in-batch negatives and are skipped for batches without them.
        mask_false_negatives: drop candidates that are the query's own positive passage under another slot.
        false_negative_margin: >= 0: also drop every candidate whose cosine exceeds the positive's plus this
            (Qwen3-Embedding's mask factor m_ij, margin 0.1; computed on detached scores); < 0: off.
        positive_margin: subtracted from the positive's cosine before the temperature (an additive margin:
            PaddleNLP's in-batch-negative ``margin``); 0: off.

    Inputs (through :class:`ContrastiveBatch`): ``q``, ``p`` (B, D), ``n`` (B, K, D), un-normalised; keys
    ``pos_keys`` (B,), ``neg_keys`` (B, K).

    References: van den Oord et al. 2018 (CPC, InfoNCE); Li et al. 2023 (GTE, arXiv 2308.03281);
    Zhang et al. 2025 (Qwen3-Embedding, arXiv 2506.05176); Zhang et al. 2025 (F2LLM).

    Relations: equals sentence-transformers' ``MultipleNegativesRankingLoss(scale=1/T)`` with
    ``partition_mode="joint"`` when no keys repeat (tested); :func:`l2e.losses.matryoshka.matryoshka`
    applies it at several embedding prefixes.
    """
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or "q2p" not in directions:
        raise LossError(f"directions={list(directions)!r} must contain 'q2p' and only: {', '.join(DIRECTIONS)}")

    def term(batch: ContrastiveBatch) -> torch.Tensor:
        rows = infonce_rows(batch, temperature=temperature, directions=directions,
                            mask_false_negatives=mask_false_negatives, false_negative_margin=false_negative_margin,
                            positive_margin=positive_margin)
        return rows.sum() * batch.row_weight

    return term


@register("infonce")
def build(cfg) -> Term:
    """Always on: the contrastive term every recipe trains (``temperature``, ``loss_directions``,
    ``mask_false_negatives``)."""
    return Term("infonce", infonce(temperature=cfg.temperature, directions=cfg.loss_directions,
                                   mask_false_negatives=cfg.mask_false_negatives,
                                   false_negative_margin=cfg.false_negative_margin,
                                   positive_margin=cfg.positive_margin))
