"""Batch plan and collation: one dataset per batch, deterministic, rank slices, EOS-keeping truncation."""
from dataclasses import dataclass, field
from typing import List

import torch

from l2e.config import Config
from l2e.data.batching import BatchCollator, pair_lengths, plan_epoch, truncate
from l2e.train.objectives import OBJECTIVES


def collator_of(datasets, **kw) -> BatchCollator:
    """A collator with each dataset's own objective (by task type), as the trainer builds it."""
    return BatchCollator(datasets, [OBJECTIVES[ds.task_type](Config(), None, None) for ds in datasets], **kw)


@dataclass
class FakeDataset:  # the attributes of l2e.data.read.TokenizedDataset the collator reads
    name: str
    task_type: str
    passages: List[List[int]]
    query_ids: List[List[int]]
    instruction_len: List[int]
    pos_id: List[int]
    neg_ids: List[List[int]]
    pos_score: List[float] = field(default_factory=list)
    neg_scores: List[List[float]] = field(default_factory=list)

    def __len__(self):
        return len(self.query_ids)


def make_ds(n, task="retrieval", negs=3):
    passages = [[100 + i, 2] for i in range(n + negs)]
    return FakeDataset("ds", task, passages, [[7, 8, 9, i, 2] for i in range(n)], [2] * n, list(range(n)),
                       [[n + j for j in range(negs)] for _ in range(n)])


def test_plan_one_dataset_per_batch_all_rows_once():
    plan = plan_epoch([10, 25], global_batch=4, seed=0, epoch=0)
    assert len(plan) == 2 + 6  # incomplete last batches dropped
    for ds in (0, 1):
        rows = [r for b in plan if b.dataset == ds for r in b.rows]
        assert len(rows) == len(set(rows))
    assert all(len(b.rows) == 4 for b in plan)


def test_plan_is_deterministic_and_changes_per_epoch():
    assert plan_epoch([30, 12], 4, seed=3, epoch=0) == plan_epoch([30, 12], 4, seed=3, epoch=0)
    assert plan_epoch([30, 12], 4, seed=3, epoch=0) != plan_epoch([30, 12], 4, seed=3, epoch=1)
    assert plan_epoch([30, 12], 4, seed=3, epoch=0) != plan_epoch([30, 12], 4, seed=4, epoch=0)


def test_length_bucketing_groups_similar_lengths():
    lengths = [[i % 50 for i in range(400)]]
    plan = plan_epoch([400], 8, seed=0, epoch=0, bucket_lengths=lengths)
    spread = [max(lengths[0][r] for r in b.rows) - min(lengths[0][r] for r in b.rows) for b in plan]
    unbucketed = plan_epoch([400], 8, seed=0, epoch=0)
    spread0 = [max(lengths[0][r] for r in b.rows) - min(lengths[0][r] for r in b.rows) for b in unbucketed]
    assert sum(spread) < sum(spread0) / 4


def test_bucketing_on_pair_lengths_cuts_passage_padding():
    # Passages of 2..121 tokens in shuffled order, queries all alike: what a batch pads to is the passage.
    n = 240
    lengths = [(i * 37) % 120 + 2 for i in range(n)]
    ds = FakeDataset("ds", "retrieval", [[5] * (k - 1) + [2] for k in lengths], [[7, 8, 9, i, 2] for i in range(n)],
                     [2] * n, list(range(n)), [[] for _ in range(n)])
    assert pair_lengths(ds, query_len=4, passage_len=100) == [4 + min(k, 100) for k in lengths]
    collator = collator_of([ds], num_hard_neg=0, query_len=4, passage_len=100, pad_id=0, seed=0)

    def padded_tokens(plan):
        return sum(collator(b, 0, i)["passage"]["input_ids"].numel() for i, b in enumerate(plan))

    plain = plan_epoch([n], 8, seed=0, epoch=0)
    bucketed = plan_epoch([n], 8, seed=0, epoch=0, bucket_lengths=[pair_lengths(ds, 4, 100)])
    assert sorted(r for b in bucketed for r in b.rows) == list(range(n))  # same rows, only grouped
    assert padded_tokens(bucketed) < 0.7 * padded_tokens(plain)


def test_truncate_keeps_last_token():
    assert truncate([1, 2, 3, 4, 5, 2], 4) == [1, 2, 3, 2]
    assert truncate([1, 2], 4) == [1, 2]


def test_collator_rank_slices_and_negatives():
    ds = make_ds(8)
    plan = plan_epoch([8], 4, seed=0, epoch=0)
    full = collator_of([ds], num_hard_neg=2, query_len=4, passage_len=8, pad_id=0, seed=1)(plan[0], 0, 0)
    halves = [collator_of([ds], num_hard_neg=2, query_len=4, passage_len=8, pad_id=0, seed=1, rank=r, world=2)
              (plan[0], 0, 0) for r in (0, 1)]
    assert full["query"]["input_ids"].shape == (4, 4)
    assert full["query"]["input_ids"][:, -1].tolist() == [2, 2, 2, 2]  # EOS survives truncation
    assert full["query"]["pool_mask"][0].tolist() == [0, 0, 1, 1]  # instruction tokens excluded
    assert full["neg_keys"].shape == (4, 2) and full["negative"]["input_ids"].shape == (8, 2)
    # the two ranks together hold exactly the single-process batch, negatives included
    assert torch.equal(torch.cat([h["neg_keys"] for h in halves]), full["neg_keys"])
    assert torch.equal(torch.cat([h["pos_keys"] for h in halves]), full["pos_keys"])


def test_classification_uses_one_negative():
    assert collator_of([make_ds(8, "classification")], num_hard_neg=5, query_len=4, passage_len=4, pad_id=0,
                         seed=0).num_neg == [1]


def test_short_rows_repeat_their_own_negatives_and_never_shrink_the_others():
    ds = make_ds(8, negs=3)
    ds.neg_ids[0] = ds.neg_ids[0][:2]  # one short row
    collator = collator_of([ds], num_hard_neg=3, query_len=4, passage_len=4, pad_id=0, seed=0)
    assert collator.num_neg == [3]
    batch = collator(plan_epoch([8], 8, 0, 0)[0], 0, 0)
    by_row = dict(zip(batch["pos_keys"].tolist(), batch["neg_keys"].tolist()))
    assert all(len(n) == 3 for n in by_row.values())
    assert sorted(set(by_row[0])) == sorted(ds.neg_ids[0]) and sorted(by_row[0].count(n) for n in ds.neg_ids[0]) == [1, 2]
    assert all(sorted(by_row[r]) == sorted(ds.neg_ids[r]) for r in by_row if r != 0)  # own 3, each once
    [c] = collator.counts()
    assert (c.short_rows, c.empty_rows, c.per_row, c.rows) == (1, 0, 3, 8)
    assert "1 of 8 rows have fewer than num_hard_neg=3 hard negatives (0 have none)" in c.message()


def test_rows_without_negatives_get_random_passages_other_than_their_positive():
    ds = make_ds(8, negs=0)
    collator = collator_of([ds], num_hard_neg=3, query_len=4, passage_len=4, pad_id=0, seed=0)
    batch = collator(plan_epoch([8], 8, 0, 0)[0], 0, 0)
    assert batch["neg_keys"].shape == (8, 3) and batch["negative"]["input_ids"].shape[0] == 24
    for pos, negs in zip(batch["pos_keys"].tolist(), batch["neg_keys"].tolist()):
        assert pos not in negs and all(0 <= n < len(ds.passages) for n in negs)
    [c] = collator.counts()
    assert (c.short_rows, c.empty_rows) == (0, 8) and "8 have none" in c.message()
    full = make_ds(8, negs=3)
    assert collator_of([full], num_hard_neg=3, query_len=4, passage_len=4, pad_id=0, seed=0).counts()[0].message() \
        is None


def test_num_hard_neg_zero_means_pairs_only():
    no_negs = collator_of([make_ds(8, negs=2)], num_hard_neg=0, query_len=4, passage_len=4, pad_id=0, seed=0)
    batch = no_negs(plan_epoch([8], 4, 0, 0)[0], 0, 0)
    assert "negative" not in batch and "neg_keys" not in batch
