"""Quantized embeddings: int8 (1 byte per dimension) and binary (1 bit), and search over them.

Quantization follows sentence-transformers' ``quantize_embeddings`` exactly (tested against it): int8 maps each
dimension's calibrated ``[min, max]`` onto 256 buckets, ``floor((x - min) / step)`` clipped to 0..255 then shifted
by -128; binary keeps the sign bit, packed 8 to a byte, shifted by -128. The ranges are calibrated on a sample of the
*corpus* and the queries are quantized with the same ranges (a query's own min/max would put it on another scale).

Search is two-stage as in sentence-transformers' ``semantic_search_faiss`` / ``_usearch``: the first stage compares
quantized codes on both sides (what an int8 or binary index stores and computes: int8 codes turned back into their
bucket values, binary as +-1 so the product is ``dims - 2 * Hamming distance``); ``rescore`` re-scores each query's
best ``rescore`` candidates with the float query against the stored codes (int8: bucket values; binary: the 0/1
bits, sentence-transformers' choice) -- the index never stores a float vector. Why by hand and not through
sentence-transformers: its search helpers return Python lists of dicts per query and need faiss or usearch; these
are the same maths as pure numpy functions, ranked by l2e's one ranking rule (``l2e.retrieval.search
.quantized_top_k``; this module imports nothing of search, which imports it).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

EMBEDDING_PRECISIONS = ("float32", "int8", "binary")


def check_precision(precision: str) -> str:
    if precision not in EMBEDDING_PRECISIONS:
        raise ValueError(f"embedding precision {precision!r}: use one of {', '.join(EMBEDDING_PRECISIONS)}")
    return precision


def calibrate(embeddings: np.ndarray) -> np.ndarray:
    """(2, dim) per-dimension ``[min; max]`` of ``embeddings`` (n, dim): the int8 buckets' ranges."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"int8 ranges need at least 2 embeddings to calibrate on (got shape {embeddings.shape})")
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0)))


def _steps(ranges: np.ndarray) -> np.ndarray:
    steps = (ranges[1] - ranges[0]) / 255
    return np.where(steps == 0, 1, steps).astype(np.float32)  # a constant dimension: one bucket, no division by 0


def quantize(embeddings: np.ndarray, precision: str, ranges: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 (n, dim) -> float32 (n, dim), int8 (n, dim) or int8 (n, ceil(dim / 8)) (binary).

    int8 without ``ranges`` calibrates on ``embeddings`` themselves (sentence-transformers' default; right for a
    corpus, wrong for a handful of queries: pass the corpus' ranges). Values outside the ranges land in the first or
    last bucket (sentence-transformers clips the same way; an int8 cast would wrap them round to the other end).
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    check_precision(precision)
    if precision == "float32":
        return embeddings
    if precision == "binary":
        return (np.packbits(embeddings > 0, axis=-1).astype(np.int16) - 128).astype(np.int8)
    ranges = calibrate(embeddings) if ranges is None else np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, embeddings.shape[1]):
        raise ValueError(f"int8 ranges of shape {ranges.shape} do not fit embeddings of dim {embeddings.shape[1]}")
    buckets = np.clip(np.floor((embeddings - ranges[0]) / _steps(ranges)), 0, 255)
    return (buckets - 128).astype(np.int8)


def dequantize(codes: np.ndarray, precision: str, ranges: Optional[np.ndarray] = None,
               dim: Optional[int] = None, signs: bool = False) -> np.ndarray:
    """Codes -> float32 vectors in the float query's coordinates: int8 -> each bucket's lower edge (as
    sentence-transformers' rescoring); binary -> the ``dim`` bits as 0/1 (``signs``: as -1/+1)."""
    if precision == "float32":
        return np.asarray(codes, dtype=np.float32)
    if precision == "binary":
        bits = np.unpackbits((codes.astype(np.int16) + 128).astype(np.uint8), axis=-1)[:, :dim]
        bits = bits.astype(np.float32)
        return 2 * bits - 1 if signs else bits
    ranges = np.asarray(ranges, dtype=np.float32)
    return ((codes.astype(np.float32) + 128) * _steps(ranges) + ranges[0]).astype(np.float32)


def bytes_per_vector(dim: int, precision: str) -> int:
    """What one stored vector takes: 4 bytes per dimension, 1, or 1 bit (rounded up to whole bytes)."""
    return {"float32": 4 * dim, "int8": dim, "binary": (dim + 7) // 8}[check_precision(precision)]


def first_stage_scores(query: np.ndarray, codes: np.ndarray, precision: str, ranges: Optional[np.ndarray],
                       dim: int) -> np.ndarray:
    """(queries, docs) scores of float queries against stored codes, the query quantized as the documents are:
    float32 cosine; int8 the product of bucket values; binary ``dims - 2 * Hamming`` (the product of +-1 vectors)."""
    if precision == "float32":
        return query @ codes.T
    q = dequantize(quantize(query, precision, ranges), precision, ranges, dim, signs=True)
    d = dequantize(codes, precision, ranges, dim, signs=True)
    return q @ d.T


def rescore(query: np.ndarray, codes: np.ndarray, candidates: np.ndarray, precision: str,
            ranges: Optional[np.ndarray], dim: int) -> np.ndarray:
    """(queries, k) float-query scores of each query's ``candidates`` (queries, k) document indices."""
    docs = dequantize(codes[candidates.reshape(-1)], precision, ranges, dim).reshape(*candidates.shape, -1)
    return np.einsum("qd,qkd->qk", query, docs)
