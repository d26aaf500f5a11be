"""What every loss term reads: one step's embeddings, this rank's and (across devices) everybody's.

A term is a plain callable ``term(batch: ContrastiveBatch) -> scalar tensor``. ``LOSSES`` maps a name to
its *builder*: ``builder(cfg) -> Term | None`` reads the config fields the term owns and returns the term
with its weight, or ``None`` when the config switches it off. Adding a loss is one file that registers a
builder, plus its config fields.

Reduction across processes. Each rank returns ``row_weight * sum(per-row losses of its own rows)`` with
``row_weight = world / N`` (N = rows on all ranks), and terms that are not a sum over rows (spread-out) are
computed on the gathered batch, identical on every rank. Then the mean of the ranks' losses is the
single-process loss on the concatenated batch, and, because the all-gather's backward sums over ranks,
each rank's embeddings receive ``world`` times the single-process gradient, which DDP's gradient
*averaging* divides back out: parameter gradients equal the single-process ones. Alone (or without
cross-device negatives) ``row_weight = 1 / B``, a plain mean.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from l2e.core.errors import L2EError
from l2e.core.registry import make_register
from l2e.losses.distributed import all_gather_rows, gather_sizes, rank_and_world

class LossError(L2EError, ValueError):
    """Loss inputs or settings that cannot work (shapes, missing keys or teacher scores, MRL dims)."""


LOSSES: Dict[str, Callable] = {}
register = make_register(LOSSES, "loss")


@dataclass(frozen=True)
class Term:
    """One enabled loss term: ``total += weight * fn(batch)``, logged under ``name``."""

    name: str  # log key ("infonce", "spread", "kd"); Matryoshka prefixes add "@dim"
    fn: Callable[["ContrastiveBatch"], torch.Tensor]
    weight: float = 1.0
    per_dim: bool = True  # Matryoshka applies it at every prefix; False: full size only
    needs_teacher: bool = False  # only on datasets whose rows carry teacher scores
    gathered: bool = False  # reads every rank's embeddings (q_all, p_all) even without in-batch negatives
    batch: str = "contrastive"  # what fn reads: a ContrastiveBatch, or "tokens": an l2e.losses.mntp.TokenBatch


@dataclass(frozen=True)
class ContrastiveBatch:
    """Un-normalised embeddings of one step; each term normalises what it reads (cheap, and MRL needs it)."""

    q: torch.Tensor  # (B, D) this rank's queries
    p: torch.Tensor  # (B, D) their positives
    n: torch.Tensor  # (B, K, D) their hard negatives, K may be 0
    q_all: torch.Tensor  # (N, D) every rank's queries; ours are rows offset .. offset+B
    p_all: torch.Tensor  # (N, D) every rank's positives, aligned with q_all
    n_all: torch.Tensor  # (M, D) every rank's hard negatives, flattened
    pos_keys: Optional[torch.Tensor]  # (B,) passage identity of each positive
    neg_keys: Optional[torch.Tensor]  # (B, K)
    pos_keys_all: Optional[torch.Tensor]  # (N,)
    neg_keys_all: Optional[torch.Tensor]  # (M,)
    offset: int
    row_weight: float  # multiplies a sum over this rank's rows (see the module docstring)
    use_in_batch: bool
    pos_scores: Optional[torch.Tensor] = None  # (B,) teacher score of each positive
    neg_scores: Optional[torch.Tensor] = None  # (B, K) teacher scores of the hard negatives
    heads: Optional[tuple] = None  # (queries, positives, flat negatives): each a dict of l2e.model.heads reps (local)

    @property
    def dim(self) -> int:
        return self.q.shape[-1]

    def at_dim(self, dim: Optional[int]) -> "ContrastiveBatch":
        """The same batch cut to the first ``dim`` features (Matryoshka prefix); ``None`` = full size."""
        if dim is None or dim == self.dim:
            return self
        if dim > self.dim:
            raise LossError(f"mrl_dims contains {dim}, larger than the embedding size {self.dim}; "
                             f"use dims <= {self.dim}")
        cut = {f: getattr(self, f)[..., :dim] for f in ("q", "p", "n", "q_all", "p_all", "n_all")}
        return dataclasses.replace(self, **cut)


def _float(x: torch.Tensor) -> torch.Tensor:
    # bf16/fp16 scores divided by a 0.05 temperature lose the ranking between close candidates.
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def make_batch(q: torch.Tensor, p: torch.Tensor, n: Optional[torch.Tensor] = None, *,
               pos_keys: Optional[torch.Tensor] = None, neg_keys: Optional[torch.Tensor] = None,
               use_in_batch: bool = True, cross_device: bool = False, gather: bool = True,
               pos_scores: Optional[torch.Tensor] = None,
               neg_scores: Optional[torch.Tensor] = None, heads: Optional[tuple] = None) -> ContrastiveBatch:
    """Collect one step's tensors; with ``cross_device`` under torch.distributed, gather every rank's.

    ``gather=False`` exchanges only the row counts (for the reduction weight): no term needs the other
    ranks' embeddings, e.g. without in-batch negatives. Every rank must make the same call (same flags),
    or the collectives hang.
    """
    q, p = _float(q), _float(p)
    b = q.shape[0]
    n = q.new_zeros((b, 0, q.shape[1])) if n is None else _float(n)
    if neg_keys is None and n.shape[1] == 0:
        neg_keys = torch.zeros((b, 0), dtype=torch.long)  # pairs only: nothing to identify
    pos_keys, neg_keys = [k.to(q.device) if k is not None else None for k in (pos_keys, neg_keys)]
    local = dict(q=q, p=p, n=n, pos_keys=pos_keys, neg_keys=neg_keys, use_in_batch=use_in_batch,
                 pos_scores=pos_scores, neg_scores=neg_scores, heads=heads)
    rank, world = rank_and_world()
    row_weight = 1.0 / b
    if cross_device and world > 1:
        sizes = gather_sizes(b, q.device)
        row_weight = world / sum(sizes)
        if gather:
            return _gathered(local, sizes, rank, row_weight)
    neg_keys_all = None if neg_keys is None else neg_keys.flatten()
    return ContrastiveBatch(q_all=q, p_all=p, n_all=n.flatten(0, 1), pos_keys_all=pos_keys, neg_keys_all=neg_keys_all,
                            offset=0, row_weight=row_weight, **local)


def _gathered(local: dict, sizes: List[int], rank: int, row_weight: float) -> ContrastiveBatch:
    """Every rank's embeddings and keys, in rank order; ours start at row ``sum(sizes[:rank])``."""
    q_all, _ = all_gather_rows(local["q"], sizes)
    p_all, _ = all_gather_rows(local["p"], sizes)
    n_all, n_sizes = all_gather_rows(local["n"].flatten(0, 1))
    pos_keys, neg_keys = local["pos_keys"], local["neg_keys"]
    pos_all = None if pos_keys is None else all_gather_rows(pos_keys, sizes)[0]
    neg_all = None if neg_keys is None else all_gather_rows(neg_keys.flatten(), n_sizes)[0]
    return ContrastiveBatch(q_all=q_all, p_all=p_all, n_all=n_all, pos_keys_all=pos_all, neg_keys_all=neg_all,
                            offset=sum(sizes[:rank]), row_weight=row_weight, **local)
