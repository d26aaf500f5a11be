"""``colbert`` -- late interaction (Khattab & Zaharia 2020): ``normalize(Linear(hidden -> colbert_dim)(h_t))`` per
real token; score = mean over query tokens of the max cosine over document tokens (sentence-transformers'
``meanmaxsim``; PyLate's ``colbert_scores`` is the sum, a per-query constant factor away, same ranking).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from l2e.model.heads.registry import HeadSpec, multi_vector_scores, register_head


class ColbertHead(nn.Module):
    def __init__(self, hidden_size: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(hidden.to(self.linear.weight.dtype)).float(), dim=-1)  # (B, S, D)


SPEC = register_head(HeadSpec(
    name="colbert", kind="multi_vector",
    build=lambda backbone, s: ColbertHead(backbone.config.hidden_size, s.colbert_dim),
    encode=lambda head, hidden, input_ids, real, text: {"colbert": head(hidden), "colbert_mask": real},
    score=multi_vector_scores("colbert"), summary="multi-vector late interaction, mean MaxSim",
    temperature=0.05, fusion_weight=1.0))
