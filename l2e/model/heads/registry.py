"""The head registry: ``HEADS`` (name -> :class:`HeadSpec`), filled by ``register_head``; see ``l2e.model.heads``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from l2e.core.registry import lookup, make_register
from l2e.model.heads.maths import maxsim, sparse_scores

KINDS = ("sparse_vector", "multi_vector")


@dataclass(frozen=True)
class HeadSpec:
    name: str
    kind: str  # one of KINDS: what its representation is, how the Embedder returns it, how search scores it
    build: Callable  # (backbone, settings: ModelSettings) -> nn.Module
    encode: Callable  # (module, hidden, input_ids, real, text) -> {name: reps[, name_mask: mask]}
    score: Callable  # (q reps dict, d reps dict) -> (Bq, Bd) scores, before temperature
    summary: str = ""  # one line for the model card
    temperature: float = 0.05  # its InfoNCE temperature where the config has no <name>_temperature
    weight: float = 1.0  # its InfoNCE weight where the config has no <name>_weight
    fusion_weight: float = 1.0  # its share of the fused score where the config has no fusion_<name>_weight
    enabled: Optional[Callable] = None  # (cfg) -> bool; default: cfg.<name>_enabled
    # Before training: (module, settings, carried: state keys an earlier stage carried in, doc_freq: vocab_size ->
    # (per-token document frequency over the training passages, n passages)) -> a line to print or None.
    start: Optional[Callable] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"head {self.name!r}: kind={self.kind!r}; use one of {', '.join(KINDS)}")

    def is_enabled(self, cfg) -> bool:
        return bool(self.enabled(cfg)) if self.enabled else bool(getattr(cfg, f"{self.name}_enabled", False))


HEADS: Dict[str, HeadSpec] = {}
_register = make_register(HEADS, "head")


def register_head(spec: HeadSpec) -> HeadSpec:
    """Add ``spec`` to ``HEADS`` (a duplicate name raises); returns it."""
    return _register(spec.name)(spec)


def get_head(name: str) -> HeadSpec:
    return lookup(HEADS, "head", name)


def head_names() -> tuple:
    return tuple(HEADS)


def enabled_heads(cfg) -> List[str]:
    """The heads a training config switches on, in registry order."""
    return [name for name, spec in HEADS.items() if spec.is_enabled(cfg)]


def head_option(cfg, name: str, option: str):
    """``temperature`` / ``weight`` / ``fusion_weight`` of head ``name``: the config's field, else the spec's."""
    spec = get_head(name)
    field = f"fusion_{name}_weight" if option == "fusion_weight" else f"{name}_{option}"
    return getattr(cfg, field, getattr(spec, option))


def build_heads(names: Sequence[str], backbone: nn.Module, settings) -> nn.ModuleDict:
    """The heads a model's settings name, sized for ``backbone``."""
    return nn.ModuleDict({name: get_head(name).build(backbone, settings) for name in names})


def head_reps(heads: nn.ModuleDict, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              pool_mask: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Every head's representation of one batch (see ``KINDS``)."""
    real = attention_mask.bool()
    text = real & pool_mask.bool() if pool_mask is not None else real  # instruction left out
    out: Dict[str, torch.Tensor] = {}
    for name, module in heads.items():
        out.update(get_head(name).encode(module, hidden, input_ids, real, text))
    return out


def head_scores(name: str, q: Dict[str, torch.Tensor], d: Dict[str, torch.Tensor]) -> torch.Tensor:
    """(Bq, Bd) scores of head ``name`` between query and document representations."""
    return get_head(name).score(q, d)


def multi_vector_scores(name: str) -> Callable:
    """Mean MaxSim of ``name``'s token vectors (sentence-transformers' ``meanmaxsim``)."""
    return lambda q, d: maxsim(q[name], q[f"{name}_mask"], d[name], d[f"{name}_mask"])


def sparse_vector_scores(name: str) -> Callable:
    """Dot products of ``name``'s weight vectors."""
    return lambda q, d: sparse_scores(q[name], d[name])
