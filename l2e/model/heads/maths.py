"""The heads' maths: pure tensor functions, testable without a model (see ``l2e.model.heads``)."""
from __future__ import annotations

import torch


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
