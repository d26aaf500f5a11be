"""GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup").

Contrastive losses want large batches (more in-batch negatives) but activation memory grows with the batch.
GradCache splits the step in two: (1) embed every sequence in small chunks *without* a graph, compute the
loss on the full batch of embeddings and its gradient with respect to the embeddings; (2) re-embed each
chunk *with* a graph and backpropagate the cached embedding gradient through it. Peak activation memory is
one chunk; the parameter gradients equal the plain full-batch step's. The random state is replayed per
chunk so dropout (e.g. LoRA dropout) draws the same masks in both passes.

Written by hand because the reference implementation (luyug/GradCache) is not packaged for current
transformers/accelerate and does not know about our three towers and DDP no_sync.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List

import torch


def split_rows(inputs: Dict[str, torch.Tensor], size: int) -> List[Dict[str, torch.Tensor]]:
    """Row chunks of a right-padded batch, each trimmed to its own longest sequence."""
    n = inputs["input_ids"].shape[0]
    chunks = []
    for start in range(0, n, size):
        part = {k: v[start:start + size] for k, v in inputs.items()}
        width = int(part["attention_mask"].sum(dim=1).max())
        chunks.append({k: v[:, :width] for k, v in part.items()})
    return chunks


def _rng_state():
    return (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def grad_cache_step(
    embed: Callable[[Dict[str, torch.Tensor]], torch.Tensor],
    groups: List[Dict[str, torch.Tensor]],
    loss_fn: Callable[[List[torch.Tensor]], Dict[str, torch.Tensor]],
    chunk_size: int,
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], contextlib.AbstractContextManager],
) -> Dict[str, torch.Tensor]:
    """One GradCache forward/backward; returns the loss terms (detached).

    ``embed(inputs) -> (rows, dim)``; ``groups`` are the padded inputs of each tower (queries, passages,
    negatives); ``loss_fn(list of (rows, dim) embeddings) -> {"loss": …}``; ``backward`` is
    ``accelerator.backward``; ``no_sync`` suppresses the DDP all-reduce for all but the last chunk.
    """
    chunks = [split_rows(g, chunk_size) for g in groups]
    states, reps = [], []
    with torch.no_grad():
        for group in chunks:
            parts = []
            for c in group:
                states.append(_rng_state())
                parts.append(embed(c))
            reps.append(torch.cat(parts))
    leaves = [r.detach().requires_grad_() for r in reps]
    terms = loss_fn(leaves)
    terms["loss"].backward()  # gradient w.r.t. the embeddings only: no parameters in this graph
    cached = [leaf.grad for leaf in leaves]
    flat = [(c, g[start:start + c["input_ids"].shape[0]])
            for group, g in zip(chunks, cached)
            for c, start in zip(group, _starts(group))]
    for i, ((c, grad), state) in enumerate(zip(flat, states)):
        _set_rng_state(state)
        ctx = no_sync() if i < len(flat) - 1 else contextlib.nullcontext()
        with ctx:
            backward((embed(c) * grad).sum())
    return {k: v.detach() for k, v in terms.items()}


def _starts(group: List[Dict[str, torch.Tensor]]) -> List[int]:
    starts, pos = [], 0
    for c in group:
        starts.append(pos)
        pos += c["input_ids"].shape[0]
    return starts
