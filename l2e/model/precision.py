"""Which arithmetic a run computes in: ``precision`` = ``"auto"`` | ``"fp32"`` | ``"bf16"``.

``bf16`` is autocast: weights, gradients and the optimizer state stay fp32 (the master copy), matrix
products run in bfloat16, and what leaves the model (pooled embeddings, losses) is fp32 again. It is not
``torch_dtype``, which stores the weights themselves in another dtype.

Why a probe and not a table of CPUs: machines of one class differ. One Intel Xeon with ``amx_bf16`` ran a
SmolLM2-sized matmul 2.8x faster in bf16, an AMD EPYC with ``avx512_bf16`` ~2.9x, and a CPU without native bf16
runs it hundreds of times slower (oneDNN emulates it). So ``auto`` asks twice: does the CPU report a native
bf16 instruction set (``amx_bf16``, ``avx512_bf16``; oneDNN's own check agrees), and is a SmolLM2-shaped matmul
measurably faster in bf16 on the threads this process has, right now. Only both yes gives bf16. On CUDA,
``auto`` is bf16 where the GPU supports it (as the GPU configs always trained).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:  # the annotations only (see PRECISIONS)
    import torch

PRECISIONS = ("auto", "fp32", "bf16")  # torch is imported lazily: configs are checked without it
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 must beat fp32 by this much in the probe: below it, the casts autocast adds eat the gain.
MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class Precision:
    """What was chosen, and the one-line reason a run prints and ``training_summary.json`` keeps."""

    name: str  # "fp32" | "bf16"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> Tuple[str, ...]:
    """The native bf16 instruction sets the CPU reports (empty where none, or no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


@functools.lru_cache(maxsize=None)
def probe_bf16_speedup(repeats: int = 8) -> float:
    """fp32 seconds / bf16 seconds for a (1024 x 576) @ (576 x 1536) matmul (SmolLM2's MLP shape), best of
    ``repeats`` each, on this process's threads. Costs ~0.1 s on a native-bf16 CPU; measured once per process."""
    import torch

    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up: oneDNN picks and caches its kernel
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        best[dtype] = min(times)
        if dtype is torch.float32 and best[dtype] == 0:
            return 1.0
    return best[torch.float32] / max(best[torch.bfloat16], 1e-12)


def resolve_precision(requested: str, device: Optional[torch.device] = None, *, flags: Optional[Tuple[str, ...]] = None,
                      speedup: Optional[float] = None) -> Precision:
    """``requested`` ("auto" | "fp32" | "bf16") on ``device`` -> the :class:`Precision` to use, with why.

    ``flags`` and ``speedup`` replace the CPU's own answers (tests; a caller that measured already).
    """
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"precision={requested!r}: use one of {', '.join(PRECISIONS)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if requested == "fp32":
        return Precision("fp32", "precision=fp32 asked for")
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not ok:
            raise ValueError("precision=bf16: this GPU has no bf16 support; use fp32")
        return Precision("bf16" if ok else "fp32", f"{device.type}: bf16 {'supported' if ok else 'not supported'}")
    if requested == "bf16":
        return Precision("bf16", "precision=bf16 asked for")
    flags = cpu_bf16_flags() if flags is None else flags
    if not flags:
        return Precision("fp32", "auto: the CPU reports no native bf16 (amx_bf16 / avx512_bf16); bf16 would be "
                                 "emulated and far slower")
    speedup = probe_bf16_speedup() if speedup is None else speedup
    if speedup < MIN_SPEEDUP:
        return Precision("fp32", f"auto: the CPU has {', '.join(flags)} but a bf16 matmul was only {speedup:.2f}x "
                                 f"as fast as fp32 here (needs {MIN_SPEEDUP}x)")
    return Precision("bf16", f"auto: the CPU has {', '.join(flags)} and a bf16 matmul ran {speedup:.2f}x faster "
                             "than fp32 here")


def autocast(precision: Precision, device: Optional[torch.device] = None):
    """The context a forward pass runs in: bf16 autocast, or nothing for fp32."""
    import torch

    device = torch.device(device or "cpu")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.bf16)
