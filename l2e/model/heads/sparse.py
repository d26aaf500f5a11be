"""``sparse`` -- bge-m3's lexical weights (Chen et al. 2024, arXiv 2402.03216; FlagEmbedding ``_sparse_embedding``).

``w_t = relu(Linear(hidden -> 1)(h_t))`` placed on token t's vocabulary id, the max over positions where a token
repeats; padding, special tokens and the instruction get no weight (FlagEmbedding zeroes cls/eos/pad/unk; l2e also
the instruction and every special id). Score: dot product.

With ``sparse_idf`` the weight is ``relu(Linear(h_t)) * sqrt(idf(t))`` with BM25's idf over the training passages,
and training starts from ``Linear = 0 * h + 1``: a shared token then scores ``idf(t)``, BM25 with a term frequency
of 1 and no length normalisation, and the head learns from there what to weigh up or down in context instead of
learning 49k vocabulary weights from a few thousand pairs.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from l2e.model.heads.maths import bm25_idf, lexical_weights
from l2e.model.heads.registry import HeadSpec, register_head, sparse_vector_scores


class LexicalHead(nn.Module):
    def __init__(self, hidden_size: int, vocab_size: int, unused_token_ids: Sequence[int] = (), idf: bool = False):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        self.vocab_size = vocab_size
        self.register_buffer("unused", torch.tensor(sorted(set(unused_token_ids)), dtype=torch.long), persistent=False)
        if idf:  # saved with the head: inference must scale by the same idf the head was trained with
            self.register_buffer("idf", torch.ones(vocab_size))

    def start_from_idf(self, idf: torch.Tensor) -> None:
        """Set the idf and make every token's contextual factor 1, so the head starts as BM25's term weights."""
        with torch.no_grad():
            self.idf.copy_(idf)
            self.linear.weight.zero_()
            self.linear.bias.fill_(1.0)

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        keep = keep.bool() & ~torch.isin(input_ids, self.unused.to(input_ids.device))
        weights = torch.relu(self.linear(hidden.to(self.linear.weight.dtype))).squeeze(-1)  # (B, S)
        if hasattr(self, "idf"):  # sqrt on each side: a shared token's product carries idf once
            weights = weights * self.idf.sqrt()[input_ids]
        return lexical_weights(weights, input_ids, keep, self.vocab_size)  # (B, V)


def _build(backbone, settings) -> LexicalHead:
    cfg = backbone.config
    return LexicalHead(cfg.hidden_size, cfg.vocab_size, settings.special_token_ids, idf=settings.sparse_idf)


def _start(head: LexicalHead, settings, carried, doc_freq):
    """sparse_idf: start from BM25's idf over the training passages, unless an earlier stage trained the head
    (init_from carries it)."""
    if not settings.sparse_idf or "heads.sparse.idf" in carried:
        return None
    df, n = doc_freq(head.vocab_size)
    head.start_from_idf(bm25_idf(torch.from_numpy(df), n))
    return (f"sparse: lexical head starts from BM25's idf over {n:,} training passages "
            f"({int((df > 0).sum()):,} distinct tokens)")


SPEC = register_head(HeadSpec(
    name="sparse", kind="sparse_vector", build=_build,
    encode=lambda head, hidden, input_ids, real, text: {"sparse": head(hidden, input_ids, text)},
    score=sparse_vector_scores("sparse"), summary="bge-m3 lexical weights, dot product",
    temperature=0.05, fusion_weight=0.3, start=_start))
