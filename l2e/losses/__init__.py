"""Contrastive losses by name (``LOSSES``) and the one builder, ``build_loss(cfg)``.

One loss per file, each a factory ``@register("name")`` taking hyperparameters by keyword and returning a
term ``term(batch) -> scalar``: ``infonce``, ``spread_out``, ``kd``, and ``mrl``, which applies terms at
several embedding prefixes. ``base`` holds the batch every term reads and explains the cross-rank reduction.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch

from l2e.losses import infonce as _infonce  # noqa: F401  (fills LOSSES)
from l2e.losses import kd as _kd  # noqa: F401
from l2e.losses import matryoshka as _matryoshka  # noqa: F401
from l2e.losses import spread_out as _spread_out  # noqa: F401
from l2e.losses.base import LOSSES, ContrastiveBatch, make_batch, register
from l2e.registry import lookup

__all__ = ["LOSSES", "ContrastiveBatch", "build_loss", "make_batch", "make_loss_fn", "register"]

LossFn = Callable[..., Dict[str, torch.Tensor]]


def build_loss(cfg) -> LossFn:
    """The training loss described by ``cfg`` (an ``l2e.config.Config``)."""
    return make_loss_fn(
        temperature=cfg.temperature, directions=cfg.loss_directions, in_batch_negatives=cfg.in_batch_negatives,
        mask_false_negatives=cfg.mask_false_negatives, cross_device_negatives=cfg.cross_device_negatives,
        mrl_enabled=cfg.mrl_enabled, mrl_dims=cfg.mrl_dims, mrl_dim_weights=cfg.mrl_dim_weights,
        mrl_include_full=cfg.mrl_include_full, spread_enabled=cfg.spread_enabled, spread_weight=cfg.spread_weight,
        spread_t=cfg.spread_t, kd_enabled=cfg.kd_enabled, kd_weight=cfg.kd_weight,
        kd_temperature=cfg.kd_temperature,
    )


def make_loss_fn(*, temperature: float, directions: Sequence[str] = ("q2p",), in_batch_negatives: bool = True,
                 mask_false_negatives: bool = True, cross_device_negatives: bool = True,
                 mrl_enabled: bool = False, mrl_dims: Sequence[int] = (), mrl_dim_weights: Sequence[float] = (),
                 mrl_include_full: bool = True, spread_enabled: bool = False, spread_weight: float = 0.1,
                 spread_t: float = 2.0, kd_enabled: bool = False, kd_weight: float = 1.0,
                 kd_temperature: float = 1.0) -> LossFn:
    """Combine the terms: ``sum over MRL dims of (infonce + spread_weight * spread) + kd_weight * kd``.

    The returned ``loss_fn(q, p, n=None, *, pos_keys, neg_keys=None, use_in_batch=True, pos_scores=None,
    neg_scores=None)`` takes un-normalised q, p (B, D) and n (B, K, D), passage keys ``pos_keys`` (B,) and
    ``neg_keys`` (B, K) (needed for false-negative masking), and returns ``{"loss": total, "infonce": …,
    "infonce@128": …, "spread": …, "kd": …}`` (the terms detached, unweighted, for logging). ``use_in_batch``
    comes from the dataset (F2LLM: retrieval yes, classification no) and is and-ed with
    ``in_batch_negatives``. The kd term is added only for batches that carry teacher scores. Under several
    processes every rank must call it with the same flags (see ``l2e.losses.base`` for the reduction).
    """
    terms = {"infonce": (lookup(LOSSES, "loss", "infonce")(
        temperature=temperature, directions=directions, mask_false_negatives=mask_false_negatives), 1.0)}
    if spread_enabled:
        terms["spread"] = (lookup(LOSSES, "loss", "spread_out")(t=spread_t), spread_weight)
    per_dim = lookup(LOSSES, "loss", "mrl")(
        terms, dims=mrl_dims if mrl_enabled else (), weights=mrl_dim_weights if mrl_enabled else (),
        include_full=mrl_include_full or not mrl_enabled)
    distill = lookup(LOSSES, "loss", "kd")(temperature=temperature, kd_temperature=kd_temperature)

    def loss_fn(q: torch.Tensor, p: torch.Tensor, n: Optional[torch.Tensor] = None, *,
                pos_keys: Optional[torch.Tensor], neg_keys: Optional[torch.Tensor] = None,
                use_in_batch: bool = True, pos_scores: Optional[torch.Tensor] = None,
                neg_scores: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        _check_inputs(q, p, n, pos_keys, neg_keys, mask_false_negatives)
        in_batch = use_in_batch and in_batch_negatives
        batch = make_batch(q, p, n, pos_keys=pos_keys, neg_keys=neg_keys, use_in_batch=in_batch,
                           cross_device=cross_device_negatives, gather=in_batch or spread_enabled,
                           pos_scores=pos_scores, neg_scores=neg_scores)
        total, values = per_dim(batch)
        if kd_enabled and (pos_scores is not None or neg_scores is not None):
            values["kd"] = distill(batch)
            total = total + kd_weight * values["kd"]
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
        raise ValueError("loss inputs: " + "; ".join(problems))
