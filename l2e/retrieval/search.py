"""Exact search with any representation, BM25 or a fusion of them -- for evaluation (as MTEB search models) and
for hard-negative mining.

A *scorer* indexes a corpus once and scores every document for a block of queries:

- :class:`RepScorer` -- one of the model's representations (``dense`` or a head of ``l2e.model.heads.HEADS``, scored
  by its kind: dot product of sparse vectors, mean MaxSim of multi-vectors);
- :class:`BM25Scorer` -- BM25 (bm25s, English stopwords), the lexical baseline;
- :class:`FusedScorer` -- a weighted sum of other scorers' scores, each min-max normalised per query over the
  corpus first (so dot products, cosines and BM25 scores add up on one scale).

:class:`MtebSearch` turns a scorer into an MTEB ``SearchProtocol``, so MTEB's own retrieval evaluator computes
every metric; :func:`search_top_k` gives the ``(scores, indices)`` the miner ranks by. Scores are computed in blocks
of queries, so memory is one block x the corpus, never queries x corpus.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from l2e.core.errors import L2EError
from l2e.model.heads import get_head, maxsim


class Reps:
    """One Embedder's representations ``names`` of a corpus and of query blocks, each text encoded once
    however many scorers (one per representation, a fusion of them) read it."""

    def __init__(self, embedder, names: Sequence[str], batch_size: int = 32, show_progress: bool = False):
        # Instruction and token caps are the embedder's own (its constructor takes the overrides).
        self.embedder, self.names = embedder, list(names)
        self.options = {"batch_size": batch_size, "show_progress": show_progress}
        self._corpus_key, self.docs = None, {}
        self._queries: Dict[tuple, dict] = {}

    def index(self, texts: Sequence[str]) -> None:
        key = (len(texts), hash(tuple(texts)))
        if key == self._corpus_key:
            return
        reps = self.embedder.encode_reps(texts, self.names, **self.options)
        self.docs = {n: _padded(v) if _multi_vector(n) else v for n, v in reps.items()}
        self._corpus_key, self._queries = key, {}

    def queries(self, texts: Sequence[str], instruction: Optional[str]) -> dict:
        inst = self.embedder.query_instruction if instruction is None else instruction
        key = (tuple(texts), inst)
        if key not in self._queries:
            settings = self.embedder.model.settings
            separator = settings.instruction_separator if settings.skip_instruction else None
            self._queries[key] = self.embedder.encode_reps(
                texts, self.names, instruction=inst or None, separator=separator,
                max_length=self.embedder.query_max_length, **self.options)
        return self._queries[key]

    def scores(self, name: str, texts: Sequence[str], instruction: Optional[str]) -> np.ndarray:
        q, d = self.queries(texts, instruction)[name], self.docs[name]
        if name == "dense":
            return q @ d.T
        if _multi_vector(name):
            return _maxsim_blocks(q, d)
        return np.asarray((q @ d.T).todense(), dtype=np.float32)


class RepScorer:
    """Scores of one representation: cosine (dense), dot product (sparse vectors), mean MaxSim (multi-vectors)."""

    def __init__(self, reps: Reps, name: str):
        self.reps, self.name = reps, name

    def index_bytes_per_doc(self) -> float:
        """What the index stores per document: float32 values (+ int32 ids for sparse vectors)."""
        docs = self.reps.docs[self.name]
        if self.name == "dense":
            return float(docs.shape[1] * 4)
        if _multi_vector(self.name):
            vectors, mask = docs
            return float(mask.sum()) * vectors.shape[2] * 4 / max(1, vectors.shape[0])
        return docs.nnz * 8 / max(1, docs.shape[0])

    def index(self, texts: Sequence[str]) -> None:
        self.reps.index(texts)

    def score(self, queries: Sequence[str], instruction: Optional[str] = None) -> np.ndarray:
        return self.reps.scores(self.name, queries, instruction)


def _multi_vector(name: str) -> bool:
    return name != "dense" and get_head(name).kind == "multi_vector"


def _padded(vectors: List[np.ndarray]):
    """Token-vector arrays -> (docs, longest, dim) tensor and its (docs, longest) mask, sorted blocks later."""
    width = max((len(v) for v in vectors), default=1)
    dim = vectors[0].shape[1] if vectors else 1
    out = np.zeros((len(vectors), width, dim), dtype=np.float32)
    mask = np.zeros((len(vectors), width), dtype=bool)
    for i, v in enumerate(vectors):
        out[i, :len(v)], mask[i, :len(v)] = v, True
    return torch.from_numpy(out), torch.from_numpy(mask)


def _maxsim_blocks(queries: List[np.ndarray], docs, block: int = 512) -> np.ndarray:
    q, q_mask = _padded(queries)
    d, d_mask = docs
    out = np.zeros((len(queries), d.shape[0]), dtype=np.float32)
    step = max(1, 2**24 // max(1, q.shape[1] * d.shape[1] * block))  # ~16M similarities per einsum
    for i in range(0, len(queries), step):
        for j in range(0, d.shape[0], block):
            out[i:i + step, j:j + block] = maxsim(q[i:i + step], q_mask[i:i + step], d[j:j + block],
                                                   d_mask[j:j + block]).numpy()
    return out


class BM25Scorer:
    """BM25 (bm25s: k1 1.5, b 0.75, English stopwords, lower-cased, no stemming) over the corpus."""

    def __init__(self):
        try:
            import bm25s  # noqa: F401
        except ImportError:
            raise L2EError("BM25 needs the bm25s package: pip install bm25s") from None
        self.retriever, self.n = None, 0

    def index(self, texts: Sequence[str]) -> None:
        import bm25s

        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)
        self.n = len(texts)

    def index_bytes_per_doc(self) -> float:
        scores = self.retriever.scores  # bm25s' sparse term -> document matrix
        return sum(v.nbytes for v in scores.values() if hasattr(v, "nbytes")) / max(1, self.n)

    def score(self, queries: Sequence[str], instruction: Optional[str] = None) -> np.ndarray:
        import bm25s

        tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
        # get_scores([]) raises in bm25s: a query of stopwords only scores 0 everywhere.
        return np.stack([self.retriever.get_scores(t) if t else np.zeros(self.n) for t in tokens]).astype(np.float32)


class FusedScorer:
    """``sum_i w_i * minmax_per_query(scores_i)`` -- scores on one scale before they are added."""

    def __init__(self, scorers: Dict[str, object], weights: Dict[str, float]):
        missing = sorted(set(weights) - set(scorers))
        if missing:
            raise L2EError(f"fusion weights name {missing}, which are not scored here ({', '.join(scorers)})")
        self.scorers, self.weights = scorers, weights

    def index(self, texts: Sequence[str]) -> None:
        for name in self.weights:
            self.scorers[name].index(texts)

    def index_bytes_per_doc(self) -> float:
        return sum(self.scorers[name].index_bytes_per_doc() for name in self.weights)

    def score(self, queries: Sequence[str], instruction: Optional[str] = None) -> np.ndarray:
        total = 0.0
        for name, weight in self.weights.items():
            total = total + weight * minmax(self.scorers[name].score(queries, instruction))
        return np.asarray(total, dtype=np.float32)


def minmax(scores: np.ndarray) -> np.ndarray:
    """Per row (query): (s - min) / (max - min); a row of equal scores becomes zeros."""
    lo, hi = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    return (scores - lo) / np.where(hi > lo, hi - lo, 1.0)


# --- ranking: the one rule every search here follows ----------------------------------------------------------


def rank_rows(scores: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Each row's candidates ``(scores, idx)`` best first, equal scores by corpus index (lower first)."""
    order = np.lexsort((idx, -scores), axis=1)  # last key first: score descending, then index
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)


def top_k(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(scores, indices)`` (rows, min(k, columns)) of a (rows, columns) score matrix, ranked by :func:`rank_rows`.

    Exact at the cut as well: when equal scores straddle rank k (BM25 gives many equal scores, zeros above all),
    the lower corpus indices are the ones kept, so neither the block size nor the backend changes a result.
    """
    kk = min(k, scores.shape[1])
    if kk == 0:
        return np.zeros((len(scores), 0), scores.dtype), np.zeros((len(scores), 0), np.int64)
    kth = np.take_along_axis(scores, np.argpartition(-scores, kk - 1, axis=1)[:, kk - 1:kk], 1)  # k-th best
    above = scores > kth
    tied = scores == kth
    room = kk - above.sum(axis=1, keepdims=True)  # how many of the tied the row still takes
    keep = above | (tied & (np.cumsum(tied, axis=1) <= room))
    idx = np.nonzero(keep)[1].reshape(len(scores), kk)  # row-major: each row's columns in index order
    return rank_rows(np.take_along_axis(scores, idx, 1), idx.astype(np.int64))


def blocks(n: int, block: int, show_progress: bool = False, desc: str = "search"):
    """Start offsets of ``block``-sized slices of ``n`` rows, with a progress bar when asked."""
    starts = range(0, n, block)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="block")
    return starts


def group_by_prompt(prompts: Sequence[Optional[str]]) -> Dict[Optional[str], List[int]]:
    """Positions of each distinct prompt (``None``: the default instruction), in first-seen order: queries are
    encoded and searched a prompt group at a time."""
    groups: Dict[Optional[str], List[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    return groups


def dense_top_k(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, block: int = 1024, use_faiss: bool = False,
                show_progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of unit vectors, a query block x the whole pool at a time (memory block x
    pool, never pool x pool): torch matmul + :func:`top_k`, or ``faiss.IndexFlatIP`` (``use_faiss``; multi-threaded
    BLAS, the same results, ranked by the same rule)."""
    k = min(k, len(corpus_emb))
    if use_faiss:
        import faiss  # optional (pip install faiss-cpu); callers check it is installed

        index = faiss.IndexFlatIP(corpus_emb.shape[1])
        index.add(np.ascontiguousarray(corpus_emb, dtype=np.float32))
        parts = [index.search(np.ascontiguousarray(query_emb[s:s + block], dtype=np.float32), k)
                 for s in blocks(len(query_emb), block, show_progress)]
        return rank_rows(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64))
    corpus = torch.from_numpy(np.ascontiguousarray(corpus_emb, dtype=np.float32))  # (pool, dim)
    scores = np.empty((len(query_emb), k), dtype=np.float32)
    idx = np.empty((len(query_emb), k), dtype=np.int64)
    for start in blocks(len(query_emb), block, show_progress):
        q = torch.from_numpy(np.ascontiguousarray(query_emb[start:start + block], dtype=np.float32))
        scores[start:start + len(q)], idx[start:start + len(q)] = top_k((q @ corpus.T).numpy(), k)
    return scores, idx


def search_top_k(scorer, queries: Sequence[str], k: int, block: int = 256, instruction: Optional[str] = None,
                 show_progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``(scores, indices)`` of any scorer here, both (n_queries, k), ranked by :func:`top_k`."""
    parts = [top_k(scorer.score(queries[start:start + block], instruction), k)
             for start in blocks(len(queries), block, show_progress)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class MtebSearch:
    """An MTEB ``SearchProtocol``: ``index`` the corpus with a scorer, ``search`` returns each query's top_k."""

    def __init__(self, scorer, name: str, block: int = 256):
        from mteb.models.model_meta import ModelMeta

        self.scorer, self.name, self.block = scorer, name, block
        self.doc_ids: List[str] = []
        self.stats = {"queries": 0, "search_s": 0.0}
        self.mteb_model_meta = ModelMeta.create_empty({"name": f"l2e/{name}", "revision": "exact"})

    def index(self, corpus, *, task_metadata=None, hf_split=None, hf_subset=None, encode_kwargs=None,
              num_proc=None, **kwargs) -> None:
        self.doc_ids = [str(i) for i in corpus["id"]]
        self.scorer.index(list(corpus["text"]))
        self.stats["index_bytes_per_doc"] = self.scorer.index_bytes_per_doc()

    def search(self, queries, *, task_metadata=None, hf_split=None, hf_subset=None, top_k: int = 1000,
               encode_kwargs=None, top_ranked=None, num_proc=None, **kwargs) -> Dict[str, Dict[str, float]]:
        import time

        ids = [str(i) for i in queries["id"]]
        start = time.perf_counter()
        scores, idx = search_top_k(self.scorer, list(queries["text"]), top_k, self.block)
        self.stats["search_s"] += time.perf_counter() - start
        self.stats["queries"] += len(ids)
        return {qid: {self.doc_ids[j]: float(s) for s, j in zip(row_s, row_i)}
                for qid, row_s, row_i in zip(ids, scores, idx)}
