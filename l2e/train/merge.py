"""Merge checkpoints: weighted average (model soup), SLERP, TIES and DARE -- of full models and of LoRA runs.

Every checkpoint is loaded as a full model first (a LoRA adapter is merged into its base with peft's
``merge_and_unload``), so adapters are merged through their products ``B A`` -- averaging the A and B factors
separately, as peft's ``add_weighted_adapter(combination_type="linear")`` does for equal ranks, is not the
average of the adapters' updates. Then, per parameter tensor (the backbone, the heads and a trainable pooling):

- ``average``: ``sum_i w_i x_i / sum_i w_i`` (Wortsman et al. 2022, model soups);
- ``slerp`` (two checkpoints, ``t``): spherical interpolation of the flattened tensors, the angle from their
  normalised copies, linear interpolation when they are nearly parallel (|cos| > 0.9995) -- mergekit's
  ``slerp`` (Qwen3-Embedding merges its fine-tuning checkpoints this way); t = 0 gives the first, 1 the second;
- ``ties`` / ``dare_ties`` / ``dare_linear``: task vectors ``x_i - base`` combined by peft's
  ``peft.utils.merge_utils`` (Yadav et al. 2023; Yu et al. 2024) and added to ``base``.

mergekit does the same on model folders, but only for transformers models (not l2e's heads and pooling) and
as an LGPL dependency; its SLERP is the few lines below. The result is an ``EmbeddingModel`` that
``export_final`` writes like any run's ``final/``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from l2e.core.errors import L2EError

METHODS = ("average", "slerp", "ties", "dare_ties", "dare_linear")
# Settings that may differ between checkpoints being merged (where the weights came from, how they are stored).
_FREE = ("base_model_path", "gguf_file", "is_adapter")


class MergeError(L2EError):
    """Checkpoints that cannot be merged as asked."""


def slerp(t: float, a: torch.Tensor, b: torch.Tensor, dot_threshold: float = 0.9995,
          eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation between two tensors of one shape (as mergekit: angle of the normalised copies,
    applied to the raw tensors; nearly parallel tensors are interpolated linearly)."""
    a32, b32 = a.float().flatten(), b.float().flatten()
    dot = torch.dot(a32 / (a32.norm() + eps), b32 / (b32.norm() + eps)).clamp(-1.0, 1.0)
    if dot.abs() > dot_threshold:
        out = (1 - t) * a32 + t * b32
    else:
        theta = torch.arccos(dot)
        sin = torch.sin(theta)
        out = torch.sin((1 - t) * theta) / sin * a32 + torch.sin(t * theta) / sin * b32
    return out.view_as(a).to(a.dtype)


def merge_states(states: Sequence[Dict[str, torch.Tensor]], method: str, *, weights: Optional[Sequence[float]] = None,
                 t: float = 0.5, base: Optional[Dict[str, torch.Tensor]] = None, density: float = 0.5,
                 seed: int = 0) -> Dict[str, torch.Tensor]:
    """Merge state dicts of one architecture, tensor by tensor (integer tensors are taken from the first)."""
    from peft.utils import merge_utils

    weights = list(weights) if weights is not None else [1.0] * len(states)
    torch.manual_seed(seed)  # DARE drops entries at random: the same merge every time
    out = {}
    for key, first in states[0].items():
        tensors = [s[key] for s in states]
        if not first.is_floating_point():
            out[key] = first
        elif method == "average":
            out[key] = (sum(w * x.float() for w, x in zip(weights, tensors)) / sum(weights)).to(first.dtype)
        elif method == "slerp":
            out[key] = slerp(t, tensors[0], tensors[1])
        else:
            b = base[key].float()
            deltas = [x.float() - b for x in tensors]
            w = torch.tensor(weights, dtype=torch.float32)
            if method == "ties":
                merged = merge_utils.ties(deltas, w, density, majority_sign_method="total")
            elif method == "dare_ties":
                merged = merge_utils.dare_ties(deltas, w, density, majority_sign_method="total")
            else:
                merged = merge_utils.dare_linear(deltas, w, density)
            out[key] = (b + merged).to(first.dtype)
    return out


def load_full(path: str):
    """(EmbeddingModel with plain weights, tokenizer): an adapter checkpoint is merged into its base."""
    from l2e.model.embedding_model import load_embedding_model

    model, tokenizer = load_embedding_model(path)
    return model.merge_adapter(), tokenizer


def merge_checkpoints(paths: Sequence[str], method: str, *, weights: Optional[Sequence[float]] = None,
                      t: float = 0.5, base: Optional[str] = None, density: float = 0.5, seed: int = 0) -> Tuple:
    """(merged EmbeddingModel, tokenizer) from l2e checkpoints (``final/``, ``step_N``, adapters)."""
    check_merge(paths, method, weights, t, base, density)
    models = []
    for path in paths:
        models.append(load_full(path))
    settings = [m.settings.replace(**{k: getattr(models[0][0].settings, k) for k in _FREE}) for m, _ in models]
    if any(s != settings[0] for s in settings):
        different = sorted(k for k, v in settings[0].to_dict().items() if any(s.to_dict()[k] != v for s in settings))
        raise MergeError(f"the checkpoints differ in {', '.join(different)}; only models of one architecture and "
                         "settings can be merged")
    base_state = load_full(base)[0].state_dict() if base else None
    merged = merge_states([m.state_dict() for m, _ in models], method, weights=weights, t=t, base=base_state,
                          density=density, seed=seed)
    target, tokenizer = models[0]
    target.load_state_dict(merged)
    return target, tokenizer


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def value_problems(method, n_models: int, weights, t, base, density, seed=0) -> List[str]:
    """Everything wrong with a merge's values, without touching a checkpoint: what ``run.py --chain`` checks
    before any stage trains, and :func:`check_merge` before loading."""
    problems: List[str] = []
    if method not in METHODS:
        problems.append(f"method={method!r}; use one of {', '.join(METHODS)}")
    if n_models < 2:
        problems.append(f"{n_models} checkpoint(s) given; merging needs at least 2")
    if method == "slerp" and n_models != 2:
        problems.append(f"slerp merges exactly 2 checkpoints ({n_models} given); use average for more")
    if not _is_number(t):
        problems.append(f"t={t!r} must be a number in [0, 1]")
    elif method == "slerp" and not 0 <= t <= 1:
        problems.append(f"t={t} must be in [0, 1]")
    if method in ("ties", "dare_ties", "dare_linear") and not base:
        problems.append(f"{method} needs base (the checkpoint the task vectors are measured from)")
    if weights is not None:
        if not isinstance(weights, (list, tuple)) or not all(_is_number(w) for w in weights):
            problems.append(f"weights={weights!r} must be a list of numbers, one per checkpoint")
        elif len(weights) != n_models or any(w < 0 for w in weights) or not sum(weights):
            problems.append(f"weights={list(weights)}: one non-negative weight per checkpoint, not all zero")
    if not _is_number(density) or not 0 < density <= 1:
        problems.append(f"density={density!r} must be a number in (0, 1]")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed={seed!r} must be an integer")
    return problems


def check_merge(paths, method: str, weights, t: float, base, density: float) -> None:
    problems = value_problems(method, len(paths), weights, t, base, density)
    import os

    problems += [f"{p!r} does not exist" for p in [*paths, *([base] if base else [])] if not os.path.isdir(p)]
    if problems:
        raise MergeError("merge: " + "; ".join(problems))
