"""Keep a training step under a resident-memory budget by checkpointing as few decoder layers as it takes.

Contrastive batches are the main lever of embedding quality, and on a CPU (or a GPU) the activations kept for
the backward pass are what limits them: SmolLM2-135M at batch 32, queries <= 64 and passages <= 160 tokens
keeps ~10 GB of them. Checkpointing a layer keeps only its input (``hidden`` floats per token) and recomputes
the rest in the backward pass, at the cost of that layer's forward once more. ``memory_budget_gb`` turns this
into a bound: the bytes one layer keeps per token are *measured* on the real model (autograd's saved tensors on
a probe batch at the longest passage length, so the attention's quadratic part is included), the worst-case
tokens of a step come from the config, and the first ``n`` layers are checkpointed for the smallest ``n`` that
fits. transformers' own per-layer switch (``GradientCheckpointingLayer.gradient_checkpointing``) does the work.
"""
from __future__ import annotations

import functools
import os
import resource
from dataclasses import dataclass
from typing import List

import torch
from torch import nn

from l2e.core.errors import L2EError

GB = 1024**3


class MemoryBudgetError(L2EError):
    """No number of checkpointed layers fits the step in ``memory_budget_gb``."""


@dataclass(frozen=True)
class CheckpointPlan:
    layers: int  # decoder layers checkpointed (the first ones)
    total_layers: int
    estimate_gb: float  # estimated peak resident memory of a step with this plan
    budget_gb: float
    per_layer_bytes_per_token: float  # measured: what one un-checkpointed layer keeps per token
    tokens_per_step: int  # worst case, from the config

    def guard_limit_bytes(self) -> float:
        """Where the resident guard (malloc_trim_over_budget) trims: the budget less one layer's growth."""
        return self.budget_gb * GB - guard_margin(self.per_layer_bytes_per_token, self.tokens_per_step)


def decoder_layers(backbone: nn.Module) -> List[nn.Module]:
    """The model's checkpointable decoder layers, in order."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in backbone.modules() if isinstance(m, GradientCheckpointingLayer)]


def saved_bytes(fn, exclude: frozenset = frozenset()) -> int:
    """Bytes autograd keeps for the backward of ``fn()`` (each storage counted once; storages in ``exclude``,
    e.g. the model's own weights, are no extra memory and not counted)."""
    storages = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in exclude:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def probe_layer_memory(model, seq_len: int, device, precision=None):
    """(bytes per token, bytes per step) one decoder layer keeps for backward, in the arithmetic the run trains in
    (bf16 autocast keeps bf16 copies of matmul inputs: less than fp32).

    Probes of 2 texts and 1 text of ``seq_len`` tokens: their difference over one text's tokens is what a layer
    keeps *per token*; the rest is what it keeps once per step whatever the batch -- under bf16 autocast the
    bf16 copies of its weights. A single probe on 2 short texts counted that constant as ~60% more memory per
    token than a real batch needs (SmolLM2's shape), and the plan checkpointed layers it did not have to."""
    from l2e.model.precision import Precision, autocast

    layers = max(1, len(decoder_layers(model.backbone)))
    was_training = model.training
    model.train()
    weights = frozenset(t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()])
    kept = {}
    try:
        for rows in (1, 2):
            ids = torch.randint(10, 1000, (rows, seq_len), device=device)
            mask = torch.ones_like(ids)
            with autocast(precision or Precision("fp32", ""), device):
                kept[rows] = saved_bytes(lambda: model(ids, mask), exclude=weights) / layers
    finally:
        model.train(was_training)
    per_token = max(kept[2] - kept[1], 0) / seq_len
    return per_token, max(kept[1] - per_token * seq_len, 0)


def release_freed_memory() -> None:
    """Hand memory the program has freed back to the OS (glibc's ``malloc_trim``), so that resident memory
    measures what is live. glibc keeps freed heap blocks for reuse; after a chain's first stage the process can
    hold gigabytes nobody uses, which a plan based on resident memory would count as taken. No-op elsewhere."""
    import gc

    gc.collect()
    trim_heap()


def trim_heap() -> bool:
    """glibc's ``malloc_trim(0)``: every whole free page in every arena goes back to the OS (not only the heap's
    top). Cheap to call (milliseconds); the cost is the page faults when that memory is used again. Returns
    False where the C library has none (musl, macOS)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library, if it has glibc's ``mallopt`` (looked up once: ``find_library`` runs ``ldconfig``)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "mallopt") else None
    except OSError:
        return None


def set_mmap_threshold(mb: float) -> bool:
    """glibc: serve every allocation of ``mb`` MiB or more with its own ``mmap``, unmapped when freed, and trim
    the heap's free top above the same size. Returns False where the C library has no ``mallopt``.

    Why: glibc starts at 128 KiB and raises the threshold by itself to the size of the largest block freed (up
    to 32 MiB), so after the first step a training step's activations (1-30 MB each) come from the heap, where a
    freed block stays resident for reuse and fragmentation keeps gigabytes above what is live: a step planned
    at 7 GB peaked at 10.3 GB. A fixed threshold also stops that adjustment, so resident memory follows what
    is live; the price is a page fault per fresh page, measured by ``benchmarks/bench_memory.py``.
    """
    libc = _libc()
    if libc is None:
        return False
    size = int(mb * 1024 * 1024)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, size)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, size))


def enable_thp() -> bool:
    """PyTorch's own switch ``THP_MEM_ALLOC_ENABLE=1``: CPU blocks of 2 MB or more are page-aligned and advised onto
    transparent huge pages. Returns whether it is in effect (torch reads the variable once, at its first block).

    Why, measured on the recipe (README, Performance): glibc's heap at the end of the forward pass was 2.2x what
    was in use -- freed activations it did not reuse for the next ones. With this switch it was 1.7x (the aligned
    blocks leave sub-page remainders for small allocations: our reading), and huge pages made the step faster.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    probe = [torch.empty(2 * 1024 * 1024 // 4) for _ in range(2)]  # >= torch's 2 MB threshold
    return all(t.data_ptr() % 4096 == 0 for t in probe)  # without it: 64-byte alignment (1 in 64 per block)


class ResidentGuard:
    """Keeps resident memory under ``limit_bytes``: before every decoder layer's forward pass and before its
    backward pass (for a checkpointed layer: before its recomputation, which transformers runs inside the backward,
    outside module hooks), if resident memory is above the limit, glibc's freed heap pages go back to the OS
    (``malloc_trim``).

    Why: what glibc keeps above what is live is freed memory inside the heap, and most of it forms during a single
    forward pass, so a trim between steps (``malloc_trim_each_step``) never reaches the peak. Trimming only when
    over the limit costs nothing on steps that fit and one page fault per reused page on those that do not.
    Hand-written: neither torch nor glibc bounds resident memory; jemalloc does, at 35% of the step speed here.
    """

    def __init__(self, limit_bytes: int):
        self.limit = int(limit_bytes)
        self.trims = 0  # since the last read of :meth:`take_trims`

    def check(self, *_) -> None:
        if current_rss_bytes() > self.limit and trim_heap():
            self.trims += 1

    def _before_backward(self, module, args, output) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(lambda grad: self.check())  # fires when the backward reaches this layer

    def attach(self, backbone: nn.Module) -> None:
        for layer in decoder_layers(backbone):
            layer.register_forward_pre_hook(self.check)
            layer.register_forward_hook(self._before_backward)

    def take_trims(self) -> int:
        n, self.trims = self.trims, 0
        return n


def current_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def plan_checkpointing(cfg, model, device, precision=None) -> CheckpointPlan:
    """The fewest checkpointed layers that keep a worst-case step under ``cfg.memory_budget_gb``."""
    layers = decoder_layers(model.backbone)
    # Weights and data resident now, read before the probe: glibc keeps part of what the probe freed (0.4 GB after
    # SmolLM2's 2-text probe, even after a trim), which the step reuses rather than adds to.
    release_freed_memory()
    resident = current_rss_bytes()
    per_layer, per_step = probe_layer_memory(model, cfg.passage_len, device, precision)
    rows = cfg.grad_cache_mini_batch if cfg.grad_cache else cfg.train_batch_size
    towers = cfg.query_len + cfg.passage_len * (1 + cfg.num_hard_neg)
    tokens = rows * towers
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    # What is resident, what the first optimizer step adds (grads + 2 Adam moments) and what every layer keeps
    # once per step (under bf16 autocast: its weights' bf16 copies).
    base = resident + 3 * trainable + len(layers) * per_step
    boundary = model.hidden_size * next(model.parameters()).element_size()  # a checkpointed layer keeps its input
    # The guard (ResidentGuard) trims before each layer, so between two checks resident memory grows by one layer's
    # kept activations and its temporaries: ~2x the kept part. Live memory must leave that room.
    margin = guard_margin(per_layer, tokens) if cfg.malloc_trim_over_budget else 0.0
    budget = cfg.memory_budget_gb * GB - margin
    total = len(layers)
    for n in range(total + 1):
        # At the end of the forward pass, un-checkpointed layers keep everything and checkpointed ones their
        # input. The backward pass frees the kept layers (the last ones) before it reaches a checkpointed layer,
        # whose recomputation then holds one layer's worth again: the peak is the larger of the two.
        kept = n * boundary + max(total - n, 1 if n else 0) * per_layer
        estimate = base + tokens * kept
        if estimate <= budget:
            return CheckpointPlan(n, len(layers), estimate / GB, cfg.memory_budget_gb, per_layer, tokens)
    room = f" + {margin / GB:.1f} GB kept free by malloc_trim_over_budget" if margin else ""
    raise MemoryBudgetError(
        f"memory_budget_gb={cfg.memory_budget_gb} cannot hold a step of {rows} rows x {towers} tokens even with all "
        f"{len(layers)} layers checkpointed (~{estimate / GB:.1f} GB{room}); raise the budget, lower train_batch_size "
        "or the max lengths, or use grad_cache")


def guard_margin(per_layer_bytes_per_token: float, tokens: int) -> float:
    """Bytes the resident guard keeps free below the budget: what one layer adds between two of its checks."""
    return 2 * per_layer_bytes_per_token * tokens


def apply_checkpointing(backbone: nn.Module, n: int) -> None:
    """Checkpoint the first ``n`` decoder layers (non-reentrant: LoRA weights get their gradients)."""
    if n == 0:
        return
    backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    for i, layer in enumerate(decoder_layers(backbone)):
        layer.gradient_checkpointing = i < n
