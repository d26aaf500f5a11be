"""Trainable poolings: a learnable-query attention pooling and NV-Embed's latent-attention pooling.

Both take token states (batch, seq, hidden) and a mask (batch, seq) of the tokens that may be pooled (real,
outside the instruction with skip-instruction), like the parameter-free poolings of ``l2e.model.pooling``, but hold
weights: they are registered in ``POOLERS`` (name -> module class), built from the model's settings, saved and
reloaded with every checkpoint and export.

- ``attention`` -- ``softmax_t(w . h_t + b)`` over the pooled tokens, then the weighted sum of the states (the
  gate / global-attention pooling). ``w`` starts at zero, so training starts from mean pooling.
- ``latent_attention`` -- NV-Embed (Lee et al. 2024, arXiv 2405.17428, ``LatentAttentionModel``): every token
  state is a query over a trainable latent array (keys = values = the latents), with pre-norm (LayerNorm on both
  sides), a residual, a GEGLU feed-forward block with a residual, then the masked mean over the pooled tokens.
  NV-Embed uses 512 latents of 4096 and 8 heads of 4096; the defaults here are small for small models
  (``latent_num`` 32, ``latent_heads`` 4 of ``latent_head_dim`` 64, ``latent_mlp_mult`` 1).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from l2e.core.registry import lookup
from l2e.model.pooling import PoolingSpec, register_pooling

POOLERS: Dict[str, Callable] = {}  # the trainable rows of l2e.model.pooling.POOLINGS: name -> module class


def register(name: str):
    """``@register("attention")`` on a trainable pooling class: a row of ``POOLINGS`` (no sentence-transformers
    Pooling flag and no engine reproduces it; l2e exports it as its own TrainablePooling module)."""

    def wrap(cls):
        register_pooling(PoolingSpec(name, cls, trainable=True), POOLERS)
        return cls

    return wrap


def masked_mean(states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, S, H), (B, S) -> (B, H): mean of the kept positions (padded rows may hold NaN: never multiplied)."""
    w = keep.to(torch.float32)
    states = states.float().masked_fill(~keep.bool()[..., None], 0.0)
    return (states * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp(min=1e-9)


@register("attention")
class AttentionPooling(nn.Module):
    def __init__(self, hidden_size: int, **_):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        scores = self.score(hidden.to(self.score.weight.dtype)).squeeze(-1).float()  # (B, S)
        scores = scores.masked_fill(~keep.bool(), float("-inf"))
        weights = torch.softmax(scores, dim=1)  # (B, S); every row keeps at least one token (pad_batch)
        return torch.einsum("bs,bsh->bh", weights, hidden.float().masked_fill(~keep.bool()[..., None], 0.0))


class _GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gates = x.chunk(2, dim=-1)
        return x * F.gelu(gates)


@register("latent_attention")
class LatentAttentionPooling(nn.Module):
    def __init__(self, hidden_size: int, latent_num: int = 32, latent_heads: int = 4, latent_head_dim: int = 64,
                 latent_mlp_mult: int = 1, **_):
        super().__init__()
        inner = latent_heads * latent_head_dim
        self.heads, self.head_dim = latent_heads, latent_head_dim
        self.latents = nn.Parameter(torch.randn(latent_num, hidden_size))
        self.norm, self.norm_context = nn.LayerNorm(hidden_size), nn.LayerNorm(hidden_size)
        self.to_q = nn.Linear(hidden_size, inner, bias=False)
        self.to_kv = nn.Linear(hidden_size, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, hidden_size, bias=False)
        self.ff_norm = nn.LayerNorm(hidden_size)
        self.ff = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size * latent_mlp_mult), _GEGLU(),
                                nn.Linear(hidden_size * latent_mlp_mult, hidden_size))

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = hidden.to(self.to_q.weight.dtype)  # (B, S, H)
        b, s, _ = x.shape
        q = self.to_q(self.norm(x)).view(b, s, self.heads, self.head_dim).transpose(1, 2)  # (B, h, S, d)
        k, v = self.to_kv(self.norm_context(self.latents)).chunk(2, dim=-1)  # (L, inner) each
        k = k.view(1, -1, self.heads, self.head_dim).transpose(1, 2).expand(b, -1, -1, -1)  # (B, h, L, d)
        v = v.view(1, -1, self.heads, self.head_dim).transpose(1, 2).expand(b, -1, -1, -1)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, -1)  # (B, S, inner)
        x = self.to_out(attended) + x
        x = self.ff(self.ff_norm(x)) + x
        return masked_mean(x, keep)  # (B, H)


def build_pooler(settings, hidden_size: int):
    """The trainable pooling the settings name, or None for the parameter-free ones (``l2e.model.pooling``)."""
    if settings.pooling_mode not in POOLERS:
        return None
    cls = lookup(POOLERS, "trainable pooling", settings.pooling_mode)
    return cls(hidden_size, latent_num=settings.latent_num, latent_heads=settings.latent_heads,
               latent_head_dim=settings.latent_head_dim, latent_mlp_mult=settings.latent_mlp_mult)
