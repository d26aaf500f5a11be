"""Pooling: token hidden states (batch, seq, hidden) -> one embedding per text (batch, hidden).

Every pooling is a pure function ``fn(hidden, attention_mask, pool_mask=None)`` registered by name in
``POOLING``; configs name them (``pooling_mode``). Masks are 0/1 tensors of shape (batch, seq).

``POOLINGS`` is the one table of every pooling, parameter-free and trainable (``l2e.model.attention_pooling``):
name -> :class:`PoolingSpec` (its function or module class, the sentence-transformers ``Pooling`` flag that
reproduces it, the serving engines' (vLLM / TEI) name for it, whether it is trainable, whether skip-instruction
changes it). Settings and config validation, the exports, the Embedder and the model card read it; a new pooling
is one ``@register`` here (or in ``attention_pooling.py``).

Positions are always found from ``attention_mask``, never from token ids: SmolLM2 (and many decoders) use
the EOS id as the pad id, so "the last EOS" would land on padding. All poolings are correct for right and
left padding.

``pool_mask`` implements skip-instruction: the instruction prefix is attended to by the model but is not
averaged into the embedding (``mean``, ``weighted_mean``). ``eos``/``last`` and ``cls`` ignore it: the last
token always lies after the instruction, and ``cls`` is by definition the first token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from l2e.core.registry import lookup, make_register


@dataclass(frozen=True)
class PoolingSpec:
    name: str
    fn: Callable  # parameter-free: fn(hidden, attention_mask, pool_mask); trainable: module class(hidden_size, **sizes)
    st_mode: Optional[str] = None  # sentence-transformers Pooling flag ("pooling_mode_mean_tokens"); None: none
    engine: Optional[str] = None  # the vLLM / TEI pooling name ("mean", "last-token"); None: the engines lack it
    trainable: bool = False  # holds weights (saved with the model; exported as l2e's TrainablePooling)
    skips_instruction: bool = True  # skip-instruction leaves the instruction out (False: its token lies after it)


POOLINGS: Dict[str, PoolingSpec] = {}  # every pooling, in registration order
POOLING: Dict[str, Callable] = {}  # the parameter-free ones: name -> function
_add_spec = make_register(POOLINGS, "pooling")


def register_pooling(spec: PoolingSpec, table: Dict[str, Callable]) -> None:
    """Put ``spec`` in ``POOLINGS`` and its function (or class) in ``table`` (a duplicate name raises)."""
    _add_spec(spec.name)(spec)
    table[spec.name] = spec.fn


def register(name: str, st_mode: Optional[str] = None, engine: Optional[str] = None, skips_instruction: bool = True):
    """Decorate a parameter-free pooling function: its row of ``POOLINGS`` (see :class:`PoolingSpec`)."""

    def wrap(fn: Callable) -> Callable:
        register_pooling(PoolingSpec(name, fn, st_mode, engine, False, skips_instruction), POOLING)
        return fn

    return wrap


def get_pooling(name: str) -> Callable:
    return lookup(POOLING, "pooling", name)


def get_pooling_spec(name: str) -> PoolingSpec:
    return lookup(POOLINGS, "pooling", name)


def pooling_from_st_mode(st_mode: str) -> Optional[str]:
    """The l2e pooling a sentence-transformers Pooling flag (``pooling_mode_lasttoken``) or, as sentence-transformers
    >= 5 writes it, mode name (``lasttoken``) means -- the first registered for it -- or None."""
    names = (st_mode, f"pooling_mode_{st_mode}", f"pooling_mode_{st_mode}_token", f"pooling_mode_{st_mode}_tokens")
    return next((s.name for s in POOLINGS.values() if s.st_mode and s.st_mode in names), None)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch,) index of the last real token: the largest position whose mask is 1 (any padding side)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (seq,)
    return (attention_mask.bool() * positions).argmax(dim=1)  # (batch,)


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch,) index of the first real token (torch.argmax returns the first maximum)."""
    return attention_mask.bool().int().argmax(dim=1)  # (batch,)


def _gather(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]  # (batch, hidden)


def _pooled_tokens(attention_mask: torch.Tensor, pool_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(batch, seq) bool: tokens that enter an average (real, and outside the instruction when given)."""
    keep = attention_mask.bool()
    return keep if pool_mask is None else keep & pool_mask.bool()


def _weighted_sum(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t h_t / sum_t w_t in float32 (bf16 sums over hundreds of tokens lose digits)."""
    weights = weights.to(torch.float32)  # (batch, seq)
    # masked_fill, not multiplication: padded rows may hold NaN (fully masked attention rows) and NaN * 0 = NaN.
    h = hidden.to(torch.float32).masked_fill(weights.unsqueeze(-1) == 0, 0.0)  # (batch, seq, hidden)
    total = (h * weights.unsqueeze(-1)).sum(dim=1)  # (batch, hidden)
    return total / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask=None) -> torch.Tensor:
    """Hidden state of the last real token (the appended EOS): what a causal decoder has read everything by."""
    return _gather(hidden, last_token_index(attention_mask)).to(torch.float32)  # (batch, hidden)


# ``eos`` before ``last`` in the table: a sentence-transformers lasttoken folder reads back as eos.
register("eos", "pooling_mode_lasttoken", "last-token", skips_instruction=False)(last_token_pool)
register("last", "pooling_mode_lasttoken", "last-token", skips_instruction=False)(last_token_pool)


@register("mean", "pooling_mode_mean_tokens", "mean")
def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask=None) -> torch.Tensor:
    """Average of the pooled tokens' hidden states."""
    return _weighted_sum(hidden, _pooled_tokens(attention_mask, pool_mask))  # (batch, hidden)


@register("weighted_mean", "pooling_mode_weightedmean_tokens")
def weighted_mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask=None) -> torch.Tensor:
    """SGPT position-weighted mean (Muennighoff 2022, arXiv 2202.08904, eq. 1): token i weighs its position i.

    Later tokens of a causal model have seen more of the text, so they count more. SGPT defines the weight as
    the token's position in the input (1 = first real token, so left padding does not shift it). Skipping
    the instruction removes its tokens from the sum but does not renumber the rest -- the definition
    sentence-transformers' ``Pooling(weightedmean, include_prompt=False)`` implements, so exports agree.
    """
    real = attention_mask.long()  # (batch, seq)
    positions = real.cumsum(dim=1)  # (batch, seq): 1..L over real tokens, whatever the padding side
    weights = positions * _pooled_tokens(attention_mask, pool_mask).long()  # 0 on instruction and padding
    return _weighted_sum(hidden, weights)  # (batch, hidden)


@register("cls", "pooling_mode_cls_token", "cls")
def first_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask=None) -> torch.Tensor:
    """Hidden state of the first real token ([CLS] for BERT-style encoders); with skip-instruction, the first
    token of the text after the instruction -- what sentence-transformers' ``Pooling(cls, include_prompt=False)``
    takes, so exports agree. A text with no token after its instruction falls back to its first real token
    (sentence-transformers does the same)."""
    pooled = _pooled_tokens(attention_mask, pool_mask)  # (batch, seq)
    index = torch.where(pooled.any(dim=1), first_token_index(pooled), first_token_index(attention_mask))
    return _gather(hidden, index).to(torch.float32)  # (batch, hidden)
