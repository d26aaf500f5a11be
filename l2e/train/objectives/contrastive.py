"""Contrastive objectives: a query against its positive, hard negatives and (where the task allows) the other rows'
positives, trained with the loss registry's contrastive terms (``l2e.losses.build_loss``: InfoNCE, Matryoshka,
spread-out, KD, the heads' terms).

Task types (F2LLM's rules): ``retrieval`` -- hard negatives and in-batch negatives; ``clustering`` -- hard negatives
only; ``classification`` -- one hard negative (another label) and no in-batch negatives (other rows may share the
label); ``simcse`` -- raw text encoded twice, dropout the only noise, the other texts of the batch its negatives.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from l2e.data.batching import truncate
from l2e.train.grad_cache import grad_cache_step
from l2e.train.objectives.base import Objective, register_objective

TOWERS = ("query", "passage", "negative")


def inputs(group: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: group[k].to(device) for k in ("input_ids", "attention_mask", "pool_mask")}


def tower_loss(loss_fn, reps: list, extra: dict) -> Dict[str, torch.Tensor]:
    """Loss of [queries, positives(, flat negatives)]: negatives arrive as (batch*K, dim), the loss wants (batch, K, dim).

    With heads each tower is a dict: its ``dense`` entry is the vector above, the rest go to the head terms
    (negatives stay flat there)."""
    heads = None
    if isinstance(reps[0], dict):
        empty = {k: v[:0] for k, v in reps[1].items()}  # no negatives: the head terms see an empty batch
        heads = (reps[0], reps[1], reps[2] if len(reps) > 2 else empty)
        reps = [r["dense"] for r in reps]
    q, p = reps[0], reps[1]
    n = reps[2].view(q.shape[0], -1, q.shape[-1]) if len(reps) > 2 else None
    return loss_fn(q, p, n, **extra, heads=heads)


@register_objective("retrieval")
class Contrastive(Objective):
    def collate(self, collator, ds, rows, mine, k, rng) -> dict:
        return collator.pairs(ds, rows, mine, k, rng, self.query_ids(collator, ds, rows[mine]))

    def query_ids(self, collator, ds, rows) -> List:
        return [truncate(ds.query_ids[r], collator.query_len) for r in rows]

    def extra(self, trainer, batch: dict) -> dict:
        """What the loss reads besides the embeddings: passage keys, teacher scores, whether in-batch negatives count."""
        device = trainer.acc.device
        extra = {"pos_keys": batch["pos_keys"].to(device), "use_in_batch": trainer.cfg.in_batch_negatives and self.in_batch}
        for k in ("neg_keys", "pos_scores", "neg_scores"):
            if k in batch:
                extra[k] = batch[k].to(device)
        return extra

    def train_step(self, trainer, batch: dict) -> Dict[str, torch.Tensor]:
        cfg, acc = trainer.cfg, trainer.acc
        groups = [inputs(batch[k], acc.device) for k in TOWERS if k in batch]
        extra = self.extra(trainer, batch)

        def loss_of(reps: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
            return tower_loss(trainer.loss_fn, reps, extra)

        if cfg.grad_cache:
            terms = grad_cache_step(lambda g: trainer.towers([g])[0], groups, loss_of, cfg.grad_cache_mini_batch,
                                    acc.backward, lambda: acc.no_sync(trainer.towers))
        else:
            terms = loss_of(trainer.towers(groups))
        trainer._check_finite(terms, trainer.train_sets[batch["dataset"]])  # before any backward: no NaN step
        if not cfg.grad_cache:
            acc.backward(terms["loss"])
        return {k: v.detach() for k, v in terms.items()}

    def valid_loss(self, trainer, model, batch: dict) -> float:
        encode = model.encode_all if len(model.heads) else model
        reps = [encode(**inputs(batch[k], trainer.acc.device)) for k in TOWERS if k in batch]
        return tower_loss(trainer.local_loss_fn, reps, self.extra(trainer, batch))["loss"].item()


@register_objective("clustering")
class Clustering(Contrastive):
    in_batch = False


@register_objective("classification")
class Classification(Contrastive):
    in_batch = False

    def negatives(self, num_hard_neg: int) -> int:
        return 1


@register_objective("simcse")
class SimCSE(Contrastive):
    def negatives(self, num_hard_neg: int) -> int:
        return 0  # the other texts of the batch are the negatives

    def query_ids(self, collator, ds, rows) -> List:
        # The query is the same text as the positive, at the same length (dropout is the only noise).
        return [truncate(ds.passages[ds.pos_id[r]], collator.passage_len) for r in rows]
