"""Learning-rate schedule: warmup, cosine to the min_lr floor, constant; stepped once per optimizer step."""
import math

import pytest
import torch

from l2e.train.optim import build_optimizer, build_scheduler, lr_at


def test_warmup_then_cosine_to_floor():
    kw = dict(base_lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=14, kind="cosine")
    assert [lr_at(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, **kw) == 1.0
    assert lr_at(9, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(14, **kw) == pytest.approx(0.1)
    assert lr_at(100, **kw) == pytest.approx(0.1)  # never below the floor


def test_constant_schedule():
    assert [lr_at(s, base_lr=2.0, min_lr=0.0, warmup_steps=2, total_steps=10, kind="constant")
            for s in (0, 1, 2, 9)] == [1.0, 2.0, 2.0, 2.0]


def test_scheduler_follows_lr_at_and_no_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    opt = build_optimizer(model, lr=0.5, weight_decay=0.1, betas=(0.9, 0.99))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == 4
    sched = build_scheduler(opt, base_lr=0.5, min_lr=0.05, warmup_steps=2, total_steps=6, kind="cosine")
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, base_lr=0.5, min_lr=0.05, warmup_steps=2, total_steps=6, kind="cosine")
                                  for s in range(6)])
