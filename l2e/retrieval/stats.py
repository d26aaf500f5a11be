"""Is a difference in nDCG@10 real? A paired bootstrap over queries, and the spread of a score over seeds.

Two models scored on the same queries give a per-query difference d_i = score_row(q_i) - score_base(q_i). The
paired bootstrap (Efron & Tibshirani 1993, ch. 13; its use for IR metrics: Sakai, "Evaluating evaluation metrics
based on the bootstrap", SIGIR 2006) resamples the n queries with replacement ``resamples`` times and takes the
mean of d over each resample; the 2.5th and 97.5th percentiles of those means are the 95% percentile interval of
the mean difference. Pairing matters: the two models' scores on one query are strongly correlated (hard queries
are hard for both), so resampling the differences, not each model's scores apart, gives a far tighter and
correct interval. A difference is called a gain or a loss only when its interval excludes 0.

What the interval covers: the choice of queries (would another sample of queries like these agree?). It does
not cover the training seed: for that, :func:`seed_spread` of one setup trained with several seeds is the
yardstick a difference between two training setups should also clear.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence

import numpy as np

from l2e.core.errors import L2EError

RESAMPLES = 10_000
LEVEL = 0.95
# Resamples drawn per block: a block holds (block x queries) indices, ~32 MB of int64 at 4M, so 10,000 resamples of
# the full Debian dev set (6,332 queries, 63M indices) never sit in memory at once.
BLOCK_ELEMENTS = 1 << 22


class StatsError(L2EError, ValueError):
    """Scores that cannot be compared (different query sets, nothing to resample)."""


def paired_differences(row: Mapping[str, float], base: Mapping[str, float]) -> np.ndarray:
    """``row[q] - base[q]`` for every query id, in sorted id order; the two must score the same queries."""
    if set(row) != set(base):
        only_row, only_base = sorted(set(row) - set(base)), sorted(set(base) - set(row))
        raise StatsError(f"the two score sets are not over the same queries ({len(only_row)} only in the row, e.g. "
                         f"{only_row[:3]}; {len(only_base)} only in base, e.g. {only_base[:3]}); score both on one "
                         "eval set")
    if not row:
        raise StatsError("no per-query scores to compare")
    ids = sorted(row)
    return np.array([row[q] for q in ids], dtype=np.float64) - np.array([base[q] for q in ids], dtype=np.float64)


def bootstrap_means(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The mean of ``diffs`` over ``resamples`` resamples of its entries with replacement. (n,) -> (resamples,).

    Drawn block by block from one ``numpy.random.Generator``: the indices come out in the same order as one
    ``rng.integers(0, n, size=(resamples, n))`` call (or ``resamples`` calls of size n), so the result does not
    depend on the block size.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    n = diffs.shape[0]
    if n == 0 or resamples < 1:
        raise StatsError(f"need at least one query and one resample (got {n} queries, {resamples} resamples)")
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_ELEMENTS // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        idx = rng.integers(0, n, size=(size, n))  # (size, n)
        out[start:start + size] = diffs[idx].mean(axis=1)
    return out


def verdict(low: float, high: float) -> str:
    """"gain" / "loss" only when the interval lies wholly above / below 0; an interval touching 0 includes it."""
    if low > 0:
        return "gain"
    if high < 0:
        return "loss"
    return "no clear difference"


def paired_bootstrap(row: Mapping[str, float], base: Mapping[str, float], *, resamples: int = RESAMPLES,
                     seed: int = 0, level: float = LEVEL) -> Dict[str, object]:
    """Mean difference ``row - base`` over queries, its percentile interval at ``level``, and the verdict.

    Returns ``{"delta", "low", "high", "verdict", "queries", "resamples", "seed", "level"}``; ``delta`` is the
    observed mean difference (not the mean of the resampled means).
    """
    if not 0 < level < 1:
        raise StatsError(f"level={level}: the interval's coverage must lie strictly between 0 and 1 (e.g. 0.95)")
    diffs = paired_differences(row, base)
    means = bootstrap_means(diffs, resamples, seed)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"delta": float(diffs.mean()), "low": float(low), "high": float(high), "verdict": verdict(low, high),
            "queries": int(diffs.shape[0]), "resamples": resamples, "seed": seed, "level": level}


def seed_spread(scores: Sequence[float]) -> Dict[str, float]:
    """Mean, min, max and sample standard deviation (n - 1 in the denominator) of one score over seeds."""
    values = [float(s) for s in scores]
    if not values:
        raise StatsError("no seeds to summarise")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": mean, "min": min(values), "max": max(values), "std": std}
