"""Matryoshka representation learning: the same loss terms on prefixes of the embedding."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch

from l2e.losses.base import ContrastiveBatch, LossError, Term


def matryoshka(terms: Sequence[Term], *, dims: Sequence[int] = (), weights: Sequence[float] = (),
               include_full: bool = True) -> Callable[[ContrastiveBatch], Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
    """Matryoshka loss: ``sum_d w_d * sum_t w_t * term_t(first d features, re-normalised)``.

    A loss *modifier*: it wraps the other terms. Each term runs on every prefix ``d`` of ``dims`` with weight
    ``w_d``, and on the full embedding with weight 1 when ``include_full`` (so the full-size embedding is
    trained too; if the full size is itself listed in ``dims``, its listed weight is used instead, once).
    With no dims it is simply the weighted sum of the terms at full size.

    Returns ``run(batch) -> (total, values)`` where ``values`` names each unweighted term: ``"infonce"`` at
    full size, ``"infonce@128"`` at prefix 128.

    Args:
        terms: the per-dim terms (name, fn, weight).
        dims: prefix sizes (``mrl_dims``), each at most the embedding size.
        weights: one weight per dim (``mrl_dim_weights``).
        include_full: also apply the terms to the full embedding (``mrl_include_full``).

    Relations: equals sentence-transformers' ``MatryoshkaLoss(loss, dims + [full], weights + [1])`` (tested).

    Reference: Kusupati et al. 2022, "Matryoshka Representation Learning" (arXiv 2205.13147).
    """
    if len(dims) != len(weights):
        raise LossError(f"mrl_dims has {len(dims)} entries but mrl_dim_weights has {len(weights)}; "
                        "give one weight per dim")
    if not dims and not include_full:
        raise LossError("no embedding size to train: mrl_dims is empty and mrl_include_full is false")

    def run(batch: ContrastiveBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        plan = [(d, w, f"@{d}") for d, w in zip(dims, weights)]
        if include_full and batch.dim not in dims:
            plan.insert(0, (None, 1.0, ""))
        total, values = 0.0, {}
        for dim, dim_weight, suffix in plan:
            cut = batch.at_dim(dim)
            for term in terms:
                values[term.name + suffix] = term.fn(cut)
                total = total + dim_weight * term.weight * values[term.name + suffix]
        return total, values

    return run


def from_config(cfg, terms: Sequence[Term]):
    """Matryoshka over ``terms`` as ``mrl_*`` say (off: the terms at full size only)."""
    on = cfg.mrl_enabled
    return matryoshka(terms, dims=cfg.mrl_dims if on else (), weights=cfg.mrl_dim_weights if on else (),
                      include_full=cfg.mrl_include_full or not on)
