"""A differentiable all-gather, for contrastive losses that use every rank's embeddings as negatives.

``accelerator.gather`` (what F2LLM uses) returns copies without a graph: the other ranks' passages become
constants and their owners never learn from being someone else's negative. Here the backward pass sums
every rank's gradient with respect to the gathered rows and hands each rank the part for the rows it owns,
so the gradient reaches the model that produced each embedding.

Written by hand rather than ``torch.distributed.nn.functional.all_gather`` because (1) ranks may hold
different numbers of rows (a last incomplete batch, different hard-negative counts) and (2) its gloo
backward goes through all-to-all; an all-reduce of the (small) gathered gradient works on every backend.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist


def rank_and_world() -> Tuple[int, int]:
    """``(rank, world_size)``, or ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_sizes(rows: int, device: torch.device) -> List[int]:
    """Every rank's ``rows``, in rank order (one tiny all-gather)."""
    _, world = rank_and_world()
    mine = torch.tensor([rows], dtype=torch.long, device=device)
    out = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(out, mine)
    return [int(t) for t in out]


class _GatherRows(torch.autograd.Function):
    """Forward: concatenate every rank's rows. Backward: sum the gradients of all ranks, keep our rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: List[int]) -> torch.Tensor:  # (rows, ...) -> (sum(sizes), ...)
        rank, world = rank_and_world()
        # all_gather needs one shape on every rank: pad to the longest (at least one row, so that empty
        # inputs, e.g. no hard negatives, still take part in the collective).
        longest = max(max(sizes), 1)
        padded = x.new_zeros((longest,) + tuple(x.shape[1:]))
        padded[: x.shape[0]] = x
        out = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(out, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([o[:n] for o, n in zip(out, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # (sum(sizes), ...) -> (rows, ...)
        # Rank k's loss depends on our rows through its copy of the gathered tensor: d(sum_k loss_k)/d(ours)
        # is the sum of every rank's gradient at our slice.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_rows(x: torch.Tensor, sizes: Optional[List[int]] = None) -> Tuple[torch.Tensor, List[int]]:
    """Concatenate ``x`` (rows, ...) from every rank in rank order, with gradients flowing back to the owner.

    Returns ``(gathered, sizes)``; pass ``sizes`` when already known (tensors with the same row count) to
    skip the size exchange. Without torch.distributed (or with one process) returns ``x`` itself.
    Integer tensors (e.g. passage keys) are gathered the same way and simply carry no gradient.
    """
    _, world = rank_and_world()
    if world == 1:
        return x, [x.shape[0]]
    if sizes is None:
        sizes = gather_sizes(x.shape[0], x.device)
    return _GatherRows.apply(x, sizes), sizes
