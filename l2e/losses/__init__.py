"""Contrastive losses by name (``LOSSES``) and the one builder, ``build_loss(cfg)``.

One loss per file; each registers a builder ``@register("name") def build(cfg) -> Term | None`` that reads
the config fields it owns: ``infonce``, ``spread_out``, ``kd``, and for the representation heads ``heads`` (one
InfoNCE term per enabled head of ``l2e.model.heads.HEADS``), ``splade_flops``, ``self_distill`` (``heads.py``), and the
token-level ``mntp`` term (``mntp.py``: ``Term.batch == "tokens"``, trained by the MNTP objective). Matryoshka (``matryoshka.py``) is not a term
but wraps the per-dim terms. ``base`` holds the batch every term reads and explains the cross-rank
reduction.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

from l2e.losses import heads as _heads  # noqa: F401
from l2e.losses import infonce as _infonce  # noqa: F401  (fills LOSSES)
from l2e.losses import kd as _kd  # noqa: F401
from l2e.losses import mntp as _mntp  # noqa: F401
from l2e.losses import spread_out as _spread_out  # noqa: F401
from l2e.losses import matryoshka
from l2e.losses.base import LOSSES, ContrastiveBatch, LossError, Term, make_batch, register

__all__ = ["LOSSES", "ContrastiveBatch", "LossError", "Term", "build_loss", "build_terms", "make_batch", "register"]

LossFn = Callable[..., Dict[str, torch.Tensor]]


def build_terms(cfg, batch: str = "contrastive") -> List[Term]:
    """Every term the config switches on that reads a ``batch`` kind of batch (``Term.batch``: "contrastive" or
    "tokens"), in registry order (a builder gives one term, None, or a list)."""
    terms: List[Term] = []
    for build in LOSSES.values():
        term = build(cfg)
        terms += term if isinstance(term, list) else [term] if term is not None else []
    return [t for t in terms if t.batch == batch]


def build_loss(cfg) -> LossFn:
    """The training loss described by ``cfg`` (an ``l2e.config.Config``): Matryoshka over the per-dim terms,
    plus the full-size terms.

    The returned ``loss_fn(q, p, n=None, *, pos_keys, neg_keys=None, use_in_batch=True, pos_scores=None,
    neg_scores=None)`` takes un-normalised q, p (B, D) and n (B, K, D), passage keys ``pos_keys`` (B,) and
    ``neg_keys`` (B, K) (needed for false-negative masking), and returns ``{"loss": total, "infonce": …,
    "infonce@128": …, "spread": …, "kd": …}`` (the terms detached, unweighted, for logging). ``use_in_batch``
    comes from the dataset (F2LLM: retrieval yes, classification no) and is and-ed with
    ``in_batch_negatives``. Terms that need teacher scores run on batches that carry them; whether a batch
    does is a property of its dataset (``tokenize_data.py`` requires all rows or none), and every rank
    trains the same dataset at each step, so every rank computes -- and reduces -- the same set of terms.
    """
    terms = build_terms(cfg)
    per_dim = matryoshka.from_config(cfg, [t for t in terms if t.per_dim])
    full_only = [t for t in terms if not t.per_dim]
    mask = cfg.mask_false_negatives
    always_gather = any(t.gathered for t in terms)

    def loss_fn(q: torch.Tensor, p: torch.Tensor, n: Optional[torch.Tensor] = None, *,
                pos_keys: Optional[torch.Tensor], neg_keys: Optional[torch.Tensor] = None,
                use_in_batch: bool = True, pos_scores: Optional[torch.Tensor] = None,
                neg_scores: Optional[torch.Tensor] = None, heads: Optional[tuple] = None) -> Dict[str, torch.Tensor]:
        _check_inputs(q, p, n, pos_keys, neg_keys, mask)
        in_batch = use_in_batch and cfg.in_batch_negatives
        batch = make_batch(q, p, n, pos_keys=pos_keys, neg_keys=neg_keys, use_in_batch=in_batch,
                           cross_device=cfg.cross_device_negatives and not heads, gather=in_batch or always_gather,
                           pos_scores=pos_scores, neg_scores=neg_scores, heads=heads)
        total, values = per_dim(batch)
        has_teacher = pos_scores is not None or neg_scores is not None
        for term in full_only:
            if term.needs_teacher and not has_teacher:
                continue
            values[term.name] = term.fn(batch)
            total = total + term.weight * values[term.name]
        return {"loss": total, **{k: v.detach() for k, v in values.items()}}

    return loss_fn


def _check_inputs(q, p, n, pos_keys, neg_keys, mask_false_negatives: bool) -> None:
    b, d = q.shape
    k = 0 if n is None else n.shape[1]
    problems = []
    if tuple(p.shape) != (b, d) or (n is not None and (n.dim() != 3 or n.shape[0] != b or n.shape[2] != d)):
        problems.append(f"shapes q {tuple(q.shape)}, p {tuple(p.shape)}, n "
                        f"{None if n is None else tuple(n.shape)}; expected (B, D), (B, D), (B, K, D)")
    if mask_false_negatives and pos_keys is None:
        problems.append("mask_false_negatives=true needs pos_keys (B,): the passage id of each positive")
    if mask_false_negatives and k and neg_keys is None:
        problems.append("mask_false_negatives=true needs neg_keys (B, K) with hard negatives")
    if neg_keys is not None and k and tuple(neg_keys.shape) != (b, k):
        problems.append(f"neg_keys has shape {tuple(neg_keys.shape)}; expected ({b}, {k}) like the negatives")
    if problems:
        raise LossError("loss inputs: " + "; ".join(problems))
