"""Optimizer and learning-rate schedule.

The schedule is a pure function of the *optimizer step* and is stepped once per optimizer step by the
trainer, never handed to ``accelerator.prepare``: a prepared scheduler advances once per process per step,
which is why F2LLM had to multiply its warmup by the process count. Here warmup and decay mean the same
thing on 1 or 64 processes by construction.
"""
from __future__ import annotations

import math

import torch


def lr_at(step: int, *, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int, kind: str) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine to ``min_lr`` or flat."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases and norms (standard for transformers)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)


def build_scheduler(optimizer, *, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int, kind: str):
    def factor(step: int) -> float:
        return lr_at(step, base_lr=base_lr, min_lr=min_lr, warmup_steps=warmup_steps,
                     total_steps=total_steps, kind=kind) / base_lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
