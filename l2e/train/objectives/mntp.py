"""Masked next-token prediction (LLM2Vec's MNTP) as an objective: raw texts, masked by ``MntpMasking``, through the
model's token states; the loss is the loss registry's ``mntp`` term (``l2e.losses.mntp``) on a ``TokenBatch``."""
from __future__ import annotations

from typing import Dict

import torch

from l2e.data.batching import MntpMasking, truncate
from l2e.losses import build_terms
from l2e.losses.mntp import TokenBatch
from l2e.train.objectives.base import Objective, ObjectiveError, register_objective


@register_objective("mntp")
class Mntp(Objective):
    in_batch = False

    def __init__(self, cfg, tokenizer, model):
        super().__init__(cfg, tokenizer, model)
        ids = tokenizer(cfg.mntp_mask_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ObjectiveError(f"mntp_mask_token={cfg.mntp_mask_token!r} is {len(ids)} tokens for this "
                                "tokenizer; choose a text that is one token (LLM2Vec uses \"_\")")
        self.masking = MntpMasking(ids[0], model.backbone.config.vocab_size, cfg.mntp_probability)
        self.terms = build_terms(cfg, batch="tokens")

    def negatives(self, num_hard_neg: int) -> int:
        return 0

    def collate(self, collator, ds, rows, mine, k, rng) -> dict:
        texts = [truncate(ds.passages[ds.pos_id[r]], collator.passage_len) for r in rows]
        masked = self.masking(texts, collator.pad_id, rng)  # drawn for the global batch, like the negatives
        return {"mntp": {key: v[mine] for key, v in masked.items()}}

    def loss(self, model, hidden: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        batch = TokenBatch(hidden, labels, model.backbone.get_input_embeddings().weight)
        values = {t.name: t.fn(batch) for t in self.terms}
        total = sum(t.weight * values[t.name] for t in self.terms)
        return {"loss": total, **{k: v.detach() for k, v in values.items()}}

    def _inputs(self, trainer, batch):
        return {k: batch["mntp"][k].to(trainer.acc.device) for k in ("input_ids", "attention_mask", "labels")}

    def train_step(self, trainer, batch: dict) -> Dict[str, torch.Tensor]:
        x = self._inputs(trainer, batch)
        (hidden,) = trainer.towers([x], token_states=True)  # no towers of queries and passages: token states
        terms = self.loss(trainer.acc.unwrap_model(trainer.towers).model, hidden, x["labels"])
        trainer._check_finite(terms, trainer.train_sets[batch["dataset"]])
        trainer.acc.backward(terms["loss"])
        return {k: v.detach() for k, v in terms.items()}

    def valid_loss(self, trainer, model, batch: dict) -> float:
        x = self._inputs(trainer, batch)
        return self.loss(model, model.token_states(x["input_ids"], x["attention_mask"]), x["labels"])["loss"].item()
