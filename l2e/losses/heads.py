"""The representation heads' losses: InfoNCE per head, SPLADE's FLOPS regulariser, bge-m3 self-distillation.

Every head is trained like the dense vector -- InfoNCE over the query's positive, its own hard negatives and
(with in-batch negatives) every other positive and hard negative of the batch, false negatives masked by
passage key -- with its own score function (``l2e.model.heads.head_scores``) and temperature. The candidates are
this process's (the trainer refuses heads with cross-device negatives).

Self-distillation (bge-m3, Chen et al. 2024, arXiv 2402.03216, section 3.3): the fused score
``sum_h w_h s_h / T_h`` over the same candidates (dense included) is the teacher; each representation's
softmax is pulled towards the teacher's (cross-entropy with the detached teacher distribution).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from l2e.losses.base import ContrastiveBatch, Term, register
from l2e.losses.infonce import _same_key
from l2e.model.heads import enabled_heads, flops, get_head, head_option, head_scores


def _cat_docs(p: Dict[str, torch.Tensor], n: Dict[str, torch.Tensor], name: str) -> Dict[str, torch.Tensor]:
    """Every positive then every hard negative as one batch of documents (token reps padded to one length)."""
    if get_head(name).kind != "multi_vector":
        return {name: torch.cat([p[name], n[name]]) if n[name].numel() else p[name]}
    mask = f"{name}_mask"
    if not n[name].numel():
        return {name: p[name], mask: p[mask]}
    width = max(p[name].shape[1], n[name].shape[1])
    pad = lambda x, w: F.pad(x, (0, 0, 0, w - x.shape[1])) if x.dim() == 3 else F.pad(x, (0, w - x.shape[1]))  # noqa: E731
    return {name: torch.cat([pad(p[name], width), pad(n[name], width)]),
            mask: torch.cat([pad(p[mask], width), pad(n[mask], width)])}


def candidate_scores(batch: ContrastiveBatch, name: str, mask_false_negatives: bool
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scores, label, excluded)`` of one representation over the query's candidates, before temperature.

    In-batch: (B, B + B*K) with every positive then every hard negative, label i. Own group: (B, 1 + K) with the
    positive first. ``excluded`` (same shape, bool) marks false negatives, left out of the softmax.
    """
    q_reps, p_reps, n_reps = batch.heads
    b = batch.q.shape[0]
    k = batch.n.shape[1]
    if name == "dense":
        q = F.normalize(batch.q, dim=-1)
        docs = F.normalize(torch.cat([batch.p, batch.n.flatten(0, 1)]), dim=-1)
        scores = q @ docs.T  # (B, B + B*K)
    else:
        scores = head_scores(name, q_reps, _cat_docs(p_reps, n_reps, name))
    rows = torch.arange(b, device=scores.device)
    if batch.use_in_batch:
        return scores, rows, _same_key(batch, "candidates", rows, mask_false_negatives)
    own = torch.cat([rows[:, None], b + rows[:, None] * k + torch.arange(k, device=scores.device)[None]], dim=1)
    scores = scores.gather(1, own)  # (B, 1 + K)
    excluded = torch.zeros_like(scores, dtype=torch.bool)
    if mask_false_negatives and k:
        excluded[:, 1:] = batch.neg_keys == batch.pos_keys[:, None]
    return scores, torch.zeros_like(rows), excluded


def head_infonce(name: str, *, temperature: float, mask_false_negatives: bool):
    """InfoNCE of one head: ``-log softmax(s / T)[positive]`` over the candidates, summed x row weight."""

    def term(batch: ContrastiveBatch) -> torch.Tensor:
        scores, label, excluded = candidate_scores(batch, name, mask_false_negatives)
        logits = (scores / temperature).masked_fill(excluded, float("-inf"))
        rows = torch.logsumexp(logits, dim=1) - logits[torch.arange(len(label)), label]
        return rows.sum() * batch.row_weight

    return term


def splade_flops(*, query_weight: float, doc_weight: float):
    """SPLADE's FLOPS regulariser on the query vectors and on the passage + negative vectors (as
    sentence-transformers' SpladeLoss: documents together, queries apart)."""

    def term(batch: ContrastiveBatch) -> torch.Tensor:
        q, p, n = (reps["splade"] for reps in batch.heads)
        docs = torch.cat([p, n]) if n.numel() else p
        return query_weight * flops(q) + doc_weight * flops(docs)

    return term


def self_distillation(weights: Dict[str, float], temperatures: Dict[str, float], mask_false_negatives: bool):
    """Each representation's candidate distribution towards the fused one (teacher detached), averaged."""

    def term(batch: ContrastiveBatch) -> torch.Tensor:
        logits = {}
        for name, temperature in temperatures.items():
            scores, label, excluded = candidate_scores(batch, name, mask_false_negatives)
            logits[name] = (scores / temperature).masked_fill(excluded, float("-inf"))
        fused = sum(weights[name] * logits[name] for name in logits)
        teacher = torch.softmax(fused.detach(), dim=1)
        losses = []
        for student in logits.values():
            log_p = torch.log_softmax(student, dim=1).masked_fill(teacher == 0, 0.0)  # -inf * 0 -> 0
            losses.append(-(teacher * log_p).sum(dim=1).sum() * batch.row_weight)
        return torch.stack(losses).mean()

    return term


@register("heads")
def build_heads(cfg) -> List[Term]:
    """Each enabled head's InfoNCE (``<head>_temperature``, ``<head>_weight``; see ``l2e.model.heads``), one term
    named after the head."""
    terms = []
    for name in enabled_heads(cfg):
        fn = head_infonce(name, temperature=head_option(cfg, name, "temperature"),
                          mask_false_negatives=cfg.mask_false_negatives)
        terms.append(Term(name, fn, head_option(cfg, name, "weight"), per_dim=False))
    return terms


@register("splade_flops")
def build_splade_flops(cfg) -> Optional[Term]:
    """``splade_enabled``: FLOPS regulariser (``splade_flops_query_weight``, ``splade_flops_doc_weight``)."""
    if not cfg.splade_enabled:
        return None
    return Term("splade_flops", splade_flops(query_weight=cfg.splade_flops_query_weight,
                                             doc_weight=cfg.splade_flops_doc_weight), 1.0, per_dim=False)


@register("self_distill")
def build_self_distill(cfg) -> Optional[Term]:
    """``self_distill_enabled``: bge-m3 self-distillation towards the ``fusion_*_weight`` fused score."""
    if not cfg.self_distill_enabled:
        return None
    heads = enabled_heads(cfg)
    weights = {"dense": cfg.fusion_dense_weight, **{n: head_option(cfg, n, "fusion_weight") for n in heads}}
    temperatures = {"dense": cfg.temperature, **{n: head_option(cfg, n, "temperature") for n in heads}}
    return Term("self_distill", self_distillation(weights, temperatures, cfg.mask_false_negatives),
                cfg.self_distill_weight, per_dim=False)
