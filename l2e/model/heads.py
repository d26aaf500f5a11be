"""Representations beside the pooled dense vector: lexical weights (bge-m3), SPLADE, multi-vector (ColBERT).

Each head reads the backbone's token states (batch, seq, hidden) and a ``keep`` mask (batch, seq) of the
tokens it may use; the maths are pure tensor functions below, the modules hold the few trainable weights.

- ``sparse`` -- bge-m3's lexical weights (Chen et al. 2024, arXiv 2402.03216; FlagEmbedding
  ``_sparse_embedding``): ``w_t = relu(Linear(hidden -> 1)(h_t))`` placed on token t's vocabulary id, the max
  over positions where a token repeats; padding, special tokens and the instruction get no weight (FlagEmbedding
  zeroes cls/eos/pad/unk; l2e also the instruction and every special id). Score: dot product.
  With ``sparse_idf`` the weight is ``relu(Linear(h_t)) * sqrt(idf(t))`` with BM25's idf over the training
  passages, and training starts from ``Linear = 0 * h + 1``: a shared token then scores ``idf(t)``, BM25 with a
  term frequency of 1 and no length normalisation, and the head learns from there what to weigh up or down in
  context instead of learning 49k vocabulary weights from a few thousand pairs.
- ``splade`` -- SPLADE (Formal et al. 2021): ``max_t log(1 + relu(logits_t))`` over the real tokens, logits from
  the LM head (tied to the input embeddings in SmolLM2 / Qwen3); FLOPS regularisation ``sum_j mean_i(w_ij)^2``.
  Exactly sentence-transformers' ``SpladePooling(max, relu)`` on the same logits. The (tokens x vocab) logits
  are made one text at a time under activation checkpointing: only the text's states are kept for backward.
- ``colbert`` -- late interaction (Khattab & Zaharia 2020): ``normalize(Linear(hidden -> colbert_dim)(h_t))``
  per real token; score = mean over query tokens of the max cosine over document tokens (sentence-transformers'
  ``meanmaxsim``; PyLate's ``colbert_scores`` is the sum, a per-query constant factor away, same ranking).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from l2e.model.settings import HEAD_NAMES  # noqa: F401  (re-exported)


# --- pure functions ---------------------------------------------------------------------------------------------


def lexical_weights(token_weights: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor,
                    vocab_size: int) -> torch.Tensor:
    """(B, S) non-negative weights on (B, S) ids -> (B, V): each id's max weight over the kept positions."""
    w = token_weights.float() * keep  # (B, S): dropped positions weigh 0, never above a real one (w >= 0)
    out = w.new_zeros((w.shape[0], vocab_size))
    return out.scatter_reduce(1, input_ids, w, reduce="amax", include_self=True)  # (B, V)


def bm25_idf(document_frequency: torch.Tensor, n_docs: int) -> torch.Tensor:
    """BM25's idf per token, in Lucene's form (bm25s' default): ``log(1 + (N - df + 0.5) / (df + 0.5))``; above
    0 for every df, highest for tokens no passage contains."""
    df = document_frequency.double()
    return torch.log1p((n_docs - df + 0.5) / (df + 0.5)).float()


def splade_pool(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, S, V) logits -> (B, V): max over kept positions of log(1 + relu(logit)); masked before the relu."""
    return torch.log1p(torch.relu(logits.float() * keep[..., None])).amax(dim=1)


def flops(reps: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser (Paria et al. 2020), as sentence-transformers' FlopsLoss: ``sum_j (mean_i w_ij)^2``."""
    return (reps.float().mean(dim=0) ** 2).sum()


def sparse_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(Bq, V) x (Bd, V) -> (Bq, Bd) dot products."""
    return q.float() @ d.float().T


def maxsim(q: torch.Tensor, q_mask: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor,
           reduce: str = "mean") -> torch.Tensor:
    """Late-interaction scores (Bq, Bd) of unit token vectors q (Bq, Sq, D) and d (Bd, Sd, D).

    For each query token the best document token; masked document tokens never win (excluded, as
    sentence-transformers does); ``reduce``: "mean" over the real query tokens or "sum" (ColBERT / PyLate).
    """
    sims = torch.einsum("qsd,ktd->qkst", q.float(), d.float())  # (Bq, Bd, Sq, Sd)
    sims = sims.masked_fill(~d_mask.bool()[None, :, None, :], torch.finfo(sims.dtype).min)
    best = sims.amax(dim=-1) * q_mask[:, None, :]  # (Bq, Bd, Sq)
    total = best.sum(dim=-1)
    if reduce == "sum":
        return total
    return total / q_mask.sum(dim=-1, keepdim=True).clamp(min=1)


# --- modules ----------------------------------------------------------------------------------------------------


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
        return lexical_weights(weights, input_ids, keep, self.vocab_size)


class SpladeHead(nn.Module):
    """SPLADE over the LM head ``lm_weight`` (vocab, hidden), which the backbone owns (tied embeddings)."""

    def __init__(self, get_lm_weight):
        super().__init__()
        self._lm_weight = get_lm_weight  # a callable, not a parameter: the weights stay the backbone's

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        weight = self._lm_weight()
        rows = []
        for h, k in zip(hidden, keep):  # one text at a time: (S, V) logits, not (B, S, V)
            fn = lambda h, k: splade_pool((h @ weight.T)[None], k[None])[0]  # noqa: E731
            rows.append(checkpoint(fn, h, k, use_reentrant=False) if torch.is_grad_enabled() else fn(h, k))
        return torch.stack(rows)  # (B, V)


class ColbertHead(nn.Module):
    def __init__(self, hidden_size: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(hidden.to(self.linear.weight.dtype)).float(), dim=-1)  # (B, S, D)


def build_heads(names: Sequence[str], backbone: nn.Module, colbert_dim: int,
                unused_token_ids: Sequence[int], sparse_idf: bool = False) -> nn.ModuleDict:
    """The heads a model's settings name, sized for ``backbone``."""
    cfg = backbone.config
    heads: Dict[str, nn.Module] = {}
    if "sparse" in names:
        heads["sparse"] = LexicalHead(cfg.hidden_size, cfg.vocab_size, unused_token_ids, idf=sparse_idf)
    if "splade" in names:
        embeddings = backbone.get_input_embeddings()
        heads["splade"] = SpladeHead(lambda: embeddings.weight)
    if "colbert" in names:
        heads["colbert"] = ColbertHead(cfg.hidden_size, colbert_dim)
    return nn.ModuleDict(heads)


def head_reps(heads: nn.ModuleDict, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              pool_mask: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Every head's representation of one batch: sparse/splade (B, V); colbert (B, S, D) and its mask."""
    real = attention_mask.bool()
    text = real & pool_mask.bool() if pool_mask is not None else real  # instruction left out
    out: Dict[str, torch.Tensor] = {}
    if "sparse" in heads:
        out["sparse"] = heads["sparse"](hidden, input_ids, text)
    if "splade" in heads:
        out["splade"] = heads["splade"](hidden, real)
    if "colbert" in heads:
        out["colbert"] = heads["colbert"](hidden)
        out["colbert_mask"] = real
    return out


def head_scores(name: str, q: Dict[str, torch.Tensor], d: Dict[str, torch.Tensor]) -> torch.Tensor:
    """(Bq, Bd) scores of head ``name`` between query and document representations."""
    if name == "colbert":
        return maxsim(q["colbert"], q["colbert_mask"], d["colbert"], d["colbert_mask"])
    return sparse_scores(q[name], d[name])
