"""Training objectives: what a batch of each task type holds and which loss it trains, behind one registry.

``OBJECTIVES`` maps a dataset's task type (``l2e.data.read.TASK_TYPES``) to an :class:`Objective` class: its batch
rule (hard negatives per row, in-batch negatives), its collation (``collate``, called by
``l2e.data.batching.BatchCollator`` for that dataset's batches) and its loss, in training (``train_step``: forward
and backward) and in validation (``valid_loss``). The trainer asks the objective of each batch's dataset and has
no branch per task type. Contrastive objectives (``contrastive.py``: retrieval, clustering, classification,
SimCSE) train the loss registry's contrastive terms; MNTP (``mntp.py``) trains its token-level term, registered in
the same loss registry (``l2e.losses.mntp``). A new objective is one file here that subclasses ``Objective`` and
registers it, and its task type in ``TASK_TYPES``.
"""
from __future__ import annotations

from l2e.train.objectives.base import OBJECTIVES, Objective, build_objectives, register_objective  # noqa: F401
from l2e.train.objectives import contrastive as _contrastive  # noqa: E402,F401  (fills OBJECTIVES)
from l2e.train.objectives import mntp as _mntp  # noqa: E402,F401

__all__ = ["OBJECTIVES", "Objective", "build_objectives", "register_objective"]
