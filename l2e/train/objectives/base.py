"""The objective registry and interface (see ``l2e.train.objectives``)."""
from __future__ import annotations

from typing import Dict, List, Type

import numpy as np
import torch

from l2e.core.errors import L2EError
from l2e.core.registry import lookup, make_register

class ObjectiveError(L2EError):
    """An objective that cannot train with this config, tokenizer or model (one line, exit status 2)."""


OBJECTIVES: Dict[str, Type["Objective"]] = {}
register_objective = make_register(OBJECTIVES, "objective")


class Objective:
    """One task type's training rule. An instance is built once per run (``build_objectives``) and may hold
    what its batches need from the model or tokenizer (MNTP: the mask token)."""

    in_batch = True  # other rows' positives are negatives (and-ed with the config's in_batch_negatives)

    def __init__(self, cfg, tokenizer, model):
        self.cfg = cfg

    def negatives(self, num_hard_neg: int) -> int:
        """Hard negatives per row in this objective's batches."""
        return num_hard_neg

    def collate(self, collator, ds, rows: np.ndarray, mine: slice, k: int, rng: np.random.Generator) -> dict:
        """This rank's share (``rows[mine]``) of a planned global batch ``rows`` as model inputs; random draws are
        made for the global batch so they do not depend on the process count."""
        raise NotImplementedError

    def train_step(self, trainer, batch: dict) -> Dict[str, torch.Tensor]:
        """Forward and backward of one batch through ``trainer.towers``: ``{"loss": ..., term: ...}``, detached."""
        raise NotImplementedError

    def valid_loss(self, trainer, model, batch: dict) -> float:
        """The loss of one validation batch through the unwrapped ``model`` (no gradient, this process alone)."""
        raise NotImplementedError


def build_objectives(cfg, tokenizer, model, datasets) -> List[Objective]:
    """One objective per dataset, by its task type; datasets of one type share the instance."""
    built: Dict[str, Objective] = {}
    for ds in datasets:
        if ds.task_type not in built:
            built[ds.task_type] = lookup(OBJECTIVES, "objective (task type)", ds.task_type)(cfg, tokenizer, model)
    return [built[ds.task_type] for ds in datasets]
