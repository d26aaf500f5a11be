"""Which rows form each training batch, and how a batch becomes tensors.

F2LLM's recipe: every batch comes from ONE dataset (in-batch negatives only make sense within a task), and
the dataset of each step is drawn with probability proportional to its remaining batches, so all datasets
finish together. The whole plan of an epoch is a pure function of ``(seed, epoch)`` and identical on every
rank; each rank then takes its slice of the global batch. Resuming therefore only needs the number of
batches already consumed (accelerate's ``skip_first_batches`` skips them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from l2e.data.read import row_lengths
from l2e.data.tokens import pad_batch


@dataclass(frozen=True)
class PlannedBatch:
    dataset: int  # index into the list of datasets
    rows: tuple  # global batch: train_batch_size * num_processes row indices


def plan_epoch(sizes: Sequence[int], global_batch: int, seed: int, epoch: int,
               bucket_lengths: Optional[Sequence[Sequence[int]]] = None) -> List[PlannedBatch]:
    """All global batches of one epoch in training order (incomplete last batches are dropped).

    ``bucket_lengths`` (per dataset, per row): sort shuffled rows into chunks of 50 batches by length, so a
    batch holds similar lengths and pads less, while the order of batches stays random.
    """
    rng = np.random.default_rng([seed, epoch])
    per_ds: List[List[tuple]] = []
    for d, n in enumerate(sizes):
        order = rng.permutation(n)
        if bucket_lengths is not None:
            order = _bucket(order, np.asarray(bucket_lengths[d]), global_batch, rng)
        per_ds.append([tuple(int(i) for i in order[k:k + global_batch])
                       for k in range(0, n - global_batch + 1, global_batch)])
    remaining = np.array([len(b) for b in per_ds], dtype=np.float64)
    cursor = [0] * len(per_ds)
    plan = []
    while remaining.sum() > 0:
        d = int(rng.choice(len(per_ds), p=remaining / remaining.sum()))
        plan.append(PlannedBatch(d, per_ds[d][cursor[d]]))
        cursor[d] += 1
        remaining[d] -= 1
    return plan


def pair_lengths(ds, query_len: int, passage_len: int) -> List[int]:
    """Per row, the tokens its query and positive take after truncation: the length to bucket on.

    The positive passage dominates what a batch pads to (Debian descriptions: p50 65, p90 149 tokens, against
    ~40 for an instructed query), so bucketing on query length alone would save almost nothing.
    """
    queries = np.minimum(row_lengths(ds.query_ids), query_len)
    passages = np.minimum(row_lengths(ds.passages), passage_len)
    return (queries + passages[np.asarray(ds.pos_id, dtype=np.int64)]).tolist() if len(ds) else []


def _bucket(order: np.ndarray, lengths: np.ndarray, global_batch: int, rng) -> np.ndarray:
    chunk = global_batch * 50
    out = []
    for k in range(0, len(order), chunk):
        part = order[k:k + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches = [part[i:i + global_batch] for i in range(0, len(part), global_batch)]
        rng.shuffle(batches)
        out.extend(batches)
    return np.concatenate(out) if out else order


def truncate(ids: Sequence[int], max_length: int) -> List[int]:
    """Cut to ``max_length`` keeping the last token (EOS for decoders, [SEP] for encoders)."""
    ids = list(ids)
    return ids if len(ids) <= max_length else ids[: max_length - 1] + ids[-1:]


def has_teacher_scores(ds) -> bool:
    """Whether a dataset's rows carry teacher scores (``tokenize_data.py`` requires all rows or none)."""
    if "teacher_scores" in getattr(ds, "meta", {}):
        return bool(ds.meta["teacher_scores"])
    return len(ds.neg_scores) > 0 and bool((row_lengths(ds.neg_scores) > 0).all())


@dataclass(frozen=True)
class NegativeCounts:
    """How a dataset's rows meet ``num_hard_neg`` (reported at setup and in ``training_summary.json``)."""

    dataset: str
    per_row: int  # negatives every row gets per step
    rows: int
    short_rows: int  # 0 < own negatives < per_row: their negatives are repeated
    empty_rows: int  # no own negative: random passages of the dataset stand in

    def message(self) -> Optional[str]:
        if not self.short_rows and not self.empty_rows:
            return None
        return (f"dataset {self.dataset!r}: {self.short_rows + self.empty_rows} of {self.rows} rows have fewer than "
                f"num_hard_neg={self.per_row} hard negatives ({self.empty_rows} have none); rows with some repeat "
                "theirs (FlagEmbedding's rule), rows with none get random passages of the dataset")


class BatchCollator:
    """Turns one rank's share of a planned batch into model inputs.

    What a batch holds is its dataset's objective's (``objectives``, one per dataset, from ``l2e.train.objectives``);
    the contrastive ones call :meth:`pairs`. Hard negatives: every row gets exactly its objective's number per step
    (``num_hard_neg``; classification rows 1, F2LLM; raw text 0), sampled
    afresh each step from the row's own negatives with a generator seeded by (seed, epoch, batch) --
    reproducible and the same after a resume. A row with fewer negatives repeats its own (FlagEmbedding's
    ``train_group_size`` rule: ``random.sample(neg * ceil(k / len(neg)), k)``); a row with none gets random
    passages of its dataset other than its positive (random negatives). A short row never shrinks the
    others; :meth:`counts` says how many rows were topped up, and the trainer prints it.
    """

    def __init__(self, datasets, objectives, *, num_hard_neg: int, query_len: int, passage_len: int, pad_id: int,
                 seed: int, rank: int = 0, world: int = 1):
        self.datasets = datasets
        # Per dataset, what its batches hold (l2e.train.objectives, by task type): how many hard negatives a row
        # gets and how a batch is collated. Handed in, so this data room never imports the training room.
        self.objectives = objectives
        self.query_len, self.passage_len, self.pad_id = query_len, passage_len, pad_id
        self.seed, self.rank, self.world = seed, rank, world
        self.num_neg = [o.negatives(num_hard_neg) for o in objectives]
        # Teacher scores exist only for a row's own negatives: a dataset with rows that have none cannot
        # give every row a scored candidate list (the trainer refuses kd on it, naming the counts).
        self.teacher = {id(ds): has_teacher_scores(ds) and bool((row_lengths(ds.neg_ids) > 0).all()) for ds in datasets}

    def counts(self) -> List[NegativeCounts]:
        out = []
        for ds, k in zip(self.datasets, self.num_neg):
            own = row_lengths(ds.neg_ids)
            out.append(NegativeCounts(ds.name, k, len(ds), int(((own > 0) & (own < k)).sum()) if k else 0,
                                      int((own == 0).sum()) if k else 0))
        return out

    def _pick(self, ds, row: int, k: int, rng: np.random.Generator) -> List[int]:
        """Positions in ``ds.neg_ids[row]`` (>= 0) or, for a row without negatives, -1 - passage id."""
        own = len(ds.neg_ids[row])
        if own:
            order = rng.permutation(own)
            return [int(order[i % own]) for i in range(k)]  # all own negatives once, then again (top-up)
        draw = rng.integers(0, len(ds.passages) - 1, size=k)  # a passage id other than the positive
        return [-1 - int(d + (d >= ds.pos_id[row])) for d in draw]

    def __call__(self, batch: PlannedBatch, epoch: int, index: int) -> dict:
        ds = self.datasets[batch.dataset]
        local = len(batch.rows) // self.world
        mine = slice(self.rank * local, (self.rank + 1) * local)
        rng = np.random.default_rng([self.seed, epoch, index, 7])
        out = self.objectives[batch.dataset].collate(self, ds, batch.rows, mine, self.num_neg[batch.dataset], rng)
        return {"dataset": batch.dataset, **out}

    def pairs(self, ds, global_rows, mine: slice, k: int, rng: np.random.Generator, query_ids: list) -> dict:
        """A contrastive batch: this rank's queries (``query_ids``, already cut), their positives, ``k`` hard
        negatives each (picked for the global batch, so the draws do not depend on the process count) and the
        teacher's scores where the dataset has them."""
        rows = global_rows[mine]
        picks = [self._pick(ds, r, k, rng) for r in global_rows][mine] if k else []
        out = {
            "query": pad_batch(query_ids, self.pad_id, [ds.instruction_len[r] for r in rows]),
            "passage": pad_batch([truncate(ds.passages[ds.pos_id[r]], self.passage_len) for r in rows], self.pad_id),
            "pos_keys": torch.tensor([ds.pos_id[r] for r in rows], dtype=torch.long),
        }
        if k:
            neg_ids = [[ds.neg_ids[r][j] if j >= 0 else -1 - j for j in pick] for r, pick in zip(rows, picks)]
            flat = [p for row in neg_ids for p in row]
            out["negative"] = pad_batch([truncate(ds.passages[p], self.passage_len) for p in flat], self.pad_id)
            out["neg_keys"] = torch.tensor(neg_ids, dtype=torch.long)
            if self.teacher[id(ds)]:
                out["pos_scores"] = torch.tensor([ds.pos_score[r] for r in rows], dtype=torch.float32)
                out["neg_scores"] = torch.tensor([[ds.neg_scores[r][j] for j in pick] for r, pick in zip(rows, picks)],
                                                 dtype=torch.float32)
        return out


@dataclass(frozen=True)
class MntpMasking:
    """Masked next-token prediction inputs (LLM2Vec, BehnamGhader et al. 2024, arXiv 2404.05961).

    Of the tokens that have a previous token (position >= 1) and are not the final EOS, each is chosen with
    ``probability``; a chosen token is replaced by ``mask_id`` (80%), a random id (10%) or kept (10%) -- BERT's
    rule, as LLM2Vec's collator for Llama-family models (probability 0.2, "_" as the mask token). ``labels``
    holds the original id at chosen positions and -100 elsewhere; the loss predicts token i from the logits at
    position i - 1 (``l2e.losses.mntp``).
    """

    mask_id: int
    vocab_size: int
    probability: float = 0.2

    def __call__(self, seqs: List[List[int]], pad_id: int, rng: np.random.Generator) -> dict:
        batch = pad_batch(seqs, pad_id)
        ids = batch["input_ids"].clone()
        labels = torch.full_like(ids, -100)
        for i, seq in enumerate(seqs):
            n = len(seq)
            chosen = np.flatnonzero(rng.random(max(n - 2, 0)) < self.probability) + 1  # positions 1 .. n-2
            if not len(chosen):
                continue
            labels[i, chosen] = ids[i, chosen]
            how = rng.random(len(chosen))
            ids[i, chosen[how < 0.8]] = self.mask_id
            swap = chosen[(how >= 0.8) & (how < 0.9)]
            ids[i, swap] = torch.as_tensor(rng.integers(0, self.vocab_size, len(swap)), dtype=ids.dtype)
        return {"input_ids": ids, "attention_mask": batch["attention_mask"], "labels": labels}


class EpochBatches(Dataset):
    """The collated batches of one epoch for this rank, as a map-style dataset (one item = one batch)."""

    def __init__(self, plan: List[PlannedBatch], collator: BatchCollator, epoch: int):
        self.plan, self.collator, self.epoch = plan, collator, epoch

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict:
        return self.collator(self.plan[i], self.epoch, i)
