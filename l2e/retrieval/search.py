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
from l2e.model.heads import get_head


class Reps:
    """One Embedder's representations ``names`` of a corpus and of query blocks, each text encoded once
    however many scorers (one per representation, a fusion of them) read it."""

    def __init__(self, embedder, names: Sequence[str], batch_size: int = 32, show_progress: bool = False,
                 dense_cache: Optional[dict] = None):
        # Instruction and token caps are the embedder's own (its constructor takes the overrides).
        self.embedder, self.names = embedder, list(names)
        # {("query" | "document", text): full-size dense vector} the evaluator's MTEB pass already encoded
        # (EmbedderEncoder's cache, same Embedder, same calls): used when dense is all that is asked.
        self.dense_cache = dense_cache if self.names == ["dense"] else None
        self.options = {"batch_size": batch_size, "show_progress": show_progress}
        self._corpus_key, self.docs = None, {}
        self._queries: Dict[tuple, dict] = {}

    def index(self, texts: Sequence[str]) -> None:
        key = (len(texts), hash(tuple(texts)))
        if key == self._corpus_key:
            return
        reps = self._cached("document", texts) or self.embedder.encode_reps(texts, self.names, **self.options)
        self.docs = {n: TokenVectors(v) if _multi_vector(n) else v for n, v in reps.items()}
        self.postings = {n: SparseIndex(v) for n, v in reps.items() if n != "dense" and not _multi_vector(n)}
        self._corpus_key, self._queries = key, {}

    def queries(self, texts: Sequence[str], instruction: Optional[str]) -> dict:
        inst = self.embedder.query_instruction if instruction is None else instruction
        key = (tuple(texts), inst)
        if key not in self._queries and inst == self.embedder.query_instruction:
            self._queries[key] = self._cached("query", texts)
        if not self._queries.get(key):
            settings = self.embedder.model.settings
            separator = settings.instruction_separator if settings.skip_instruction else None
            self._queries[key] = self.embedder.encode_reps(
                texts, self.names, instruction=inst or None, separator=separator,
                max_length=self.embedder.query_max_length, **self.options)
        return self._queries[key]

    def _cached(self, kind: str, texts: Sequence[str]) -> Optional[dict]:
        cache = self.dense_cache
        if not cache or not texts or any((kind, t) not in cache for t in texts):
            return None
        return {"dense": np.stack([cache[(kind, t)] for t in texts])}

    def scores(self, name: str, texts: Sequence[str], instruction: Optional[str]) -> np.ndarray:
        q, d = self.queries(texts, instruction)[name], self.docs[name]
        if name == "dense":
            return q @ d.T
        if _multi_vector(name):
            return d.maxsim(q)
        return self.postings[name].scores(q)


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
            return float(docs.tokens.numel() * 4) / max(1, len(docs))
        return docs.nnz * 8 / max(1, docs.shape[0])

    def index(self, texts: Sequence[str]) -> None:
        self.reps.index(texts)

    def score(self, queries: Sequence[str], instruction: Optional[str] = None) -> np.ndarray:
        return self.reps.scores(self.name, queries, instruction)

    def top_k(self, queries: Sequence[str], k: int, instruction: Optional[str] = None):
        """Dense over a corpus of ``FAISS_ABOVE`` documents or more: ``faiss.IndexFlatIP`` when faiss is installed
        (exact, multi-threaded, the same ranking rule); every other case: the score matrix and :func:`top_k`."""
        docs = self.reps.docs[self.name]
        if self.name == "dense" and len(docs) >= FAISS_ABOVE and has_faiss():
            if getattr(self, "_faiss_docs", None) is not docs:
                import faiss

                self._faiss_docs, self._faiss = docs, faiss.IndexFlatIP(docs.shape[1])
                self._faiss.add(np.ascontiguousarray(docs, dtype=np.float32))
            q = np.ascontiguousarray(self.reps.queries(queries, instruction)[self.name], dtype=np.float32)
            scores, idx = self._faiss.search(q, min(k, len(docs)))
            return rank_rows(scores, idx.astype(np.int64))
        return top_k(self.score(queries, instruction), k)


FAISS_ABOVE = 100_000  # documents; below it a BLAS product per query block is as fast and needs no extra package


def has_faiss() -> bool:
    try:
        import faiss  # noqa: F401  (optional: pip install faiss-cpu)
    except ImportError:
        return False
    return True


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


def spans(starts: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Flat indices of the ranges ``starts[i] : starts[i] + lengths[i]`` one after another, and where each range
    begins in them (what ``np.maximum.reduceat`` takes)."""
    seg = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return np.repeat(starts - seg, lengths) + np.arange(int(lengths.sum())), seg


class TokenVectors:
    """A corpus's multi-vectors stored flat: every document's token vectors one after another (``tokens``,
    (total tokens, dim)), document ``i`` at rows ``offsets[i]:offsets[i + 1]``. No padding is stored, so exhaustive
    MaxSim and a candidate's exact re-scoring touch each real token once.

    Exhaustive MaxSim goes through documents sorted by length in blocks padded to the block's longest document with
    copies of each document's own last token: a copy never changes a maximum, so no mask and no masked fill (the
    padded layout with a mask spent most of its time filling and reducing padding)."""

    def __init__(self, vectors: Sequence[np.ndarray], block: int = 512):
        self.lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        empty = np.flatnonzero(self.lengths == 0)
        if len(empty):
            raise L2EError(f"document {int(empty[0])} has no token vectors: MaxSim needs at least one per document")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        dim = vectors[0].shape[1] if len(vectors) else 1
        self.tokens = torch.from_numpy(np.concatenate(vectors).astype(np.float32, copy=False) if len(vectors)
                                       else np.zeros((0, dim), np.float32))
        order = np.argsort(self.lengths, kind="stable")
        self.blocks = [order[s:s + block] for s in range(0, len(order), block)]

    def __len__(self) -> int:
        return len(self.lengths)

    def padded(self, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), longest, dim): the documents ``rows``, each padded with copies of its last token."""
        width = int(self.lengths[rows].max())
        last = (self.lengths[rows] - 1)[:, None]
        return self.tokens[torch.from_numpy(self.offsets[rows][:, None] + np.minimum(np.arange(width), last))]

    def maxsim(self, queries: Sequence[np.ndarray], sims_per_step: int = 2**24) -> np.ndarray:
        """(queries, documents) mean MaxSim, as :func:`l2e.model.heads.maxsim` computes it, of every document."""
        q, q_mask = _padded(queries)  # (Q, Sq, D); padded query tokens are zero and weigh nothing
        weight = q_mask.float() / q_mask.sum(dim=1, keepdim=True).clamp(min=1)  # mean over real query tokens
        out = np.zeros((len(queries), len(self)), dtype=np.float32)
        for rows in self.blocks:
            d = self.padded(rows)  # (B, W, D)
            flat = d.reshape(-1, d.shape[-1]).T
            step = max(1, sims_per_step // max(1, q.shape[1] * flat.shape[1]))
            for i in range(0, len(queries), step):
                qb = q[i:i + step]
                sims = (qb.reshape(-1, qb.shape[-1]) @ flat).view(len(qb), q.shape[1], len(rows), d.shape[1])
                out[i:i + step, rows] = torch.einsum("qsk,qs->qk", sims.amax(dim=-1), weight[i:i + step]).numpy()
        return out

    def maxsim_rows(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) mean MaxSim of one query's token vectors (Sq, D) against the documents ``rows`` only: their
        tokens gathered flat, one product, each document's maximum by ``np.maximum.reduceat`` over its segment."""
        idx, seg = spans(self.offsets[rows], self.lengths[rows])
        gathered = torch.index_select(self.tokens, 0, torch.from_numpy(idx))  # (tokens of rows, D)
        sims = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)) @ gathered.T  # (Sq, tokens of rows)
        return np.maximum.reduceat(sims.numpy(), seg, axis=1).mean(axis=0)


class SparseIndex:
    """Sparse document vectors as an inverted index: each term's posting list (the documents that hold it and
    their weights), so a query's scores touch only the postings of its own terms -- ``sum over the query's terms
    of posting lengths`` multiply-adds instead of the whole corpus x vocabulary. Scores equal the dense product
    ``q @ D.T`` (tested). Why scipy and not an inverted-index library: scipy's CSR x CSR product *is* that
    traversal (term-at-a-time accumulation, SMMP), on arrays l2e already holds; the engines that do more
    (pruning with block-max bounds: seismic, PISA) need a service or a Rust build.

    Vectors that are not sparse (an untrained SPLADE head puts weight on most of the vocabulary) make posting
    lists as long as the corpus; above ``DENSE_ABOVE`` filled cells the documents are kept as one dense matrix
    and scored by BLAS instead, which is then the faster exact product."""

    DENSE_ABOVE = 0.02  # share of (documents x vocabulary) cells that are non-zero
    DENSE_MAX_BYTES = 2 << 30  # ... and only while the dense matrix fits in 2 GiB

    def __init__(self, docs):
        import scipy.sparse

        docs = scipy.sparse.csr_matrix(docs, dtype=np.float32)
        self.shape, self.nnz = docs.shape, docs.nnz
        cells = max(1, docs.shape[0] * docs.shape[1])
        self.dense = (docs.toarray() if docs.nnz / cells > self.DENSE_ABOVE and cells * 4 <= self.DENSE_MAX_BYTES
                      else None)
        self.postings = None if self.dense is not None else docs.T.tocsr()  # (vocabulary, documents)

    def scores(self, queries) -> np.ndarray:
        """(queries, documents) dot products of a CSR block of query vectors."""
        if self.dense is not None:
            return np.asarray(queries.toarray() @ self.dense.T, dtype=np.float32)
        return np.asarray((queries @ self.postings).toarray(), dtype=np.float32)


class ColbertCandidates:
    """Multi-vector search with a candidate stage (PLAID's stages: Santhanam et al. 2022, arXiv 2205.09707), then
    exact MaxSim on the candidates.

    Index: spherical k-means centroids of the documents' token vectors (``centroids``, trained on a sample of up to
    65,536 tokens), each token's nearest centroid (its code) and, per centroid, the documents with a token coded to
    it. Search, per query:

    1. *probe*: each query token takes its ``nprobe`` nearest centroids; a document's first score is the mean over
       query tokens of the best probed centroid similarity among its tokens (0 where none was probed);
    2. *centroid interaction* (only when ``refine`` > ``candidates``; PLAID's stage 3): the best ``refine``
       documents are scored as MaxSim with every token replaced by its centroid -- a table lookup in the (query
       tokens x centroids) similarities;
    3. *exact*: the best ``candidates`` are re-scored by exact MaxSim and only they are returned (a query's list holds
       ``min(k, candidates)`` documents: Recall@100 needs ``candidates >= 100``).

    With every centroid probed and every document a candidate the result is exhaustive MaxSim (tested). Defaults
    from ``benchmarks/bench_search.py`` on the full dev set (6,253 documents, a trained ColBERT head): 64 probes and
    256 exact candidates found 0.87 of the exhaustive top 100 in 41 s for 6,332 queries; centroid interaction on
    1,024 documents cost more than it found there (0.57 at 4 probes, 57 s), so it is off unless asked for.
    Why by hand: PyLate's PLAID index (fast-plaid) does not install beside sentence-transformers 6 here, and
    token-level ``faiss`` kNN costs as many flops as exhaustive MaxSim unless approximate."""

    def __init__(self, reps: "Reps", name: str, candidates: int = 256, nprobe: int = 64, centroids: int = 0,
                 seed: int = 0, refine: int = 0):
        self.reps, self.name = reps, name
        self.candidates, self.nprobe, self.n_centroids, self.seed = candidates, nprobe, centroids, seed
        self.refine = refine

    def index(self, texts: Sequence[str]) -> None:
        self.reps.index(texts)
        docs: TokenVectors = self.reps.docs[self.name]
        owner = np.repeat(np.arange(len(docs)), docs.lengths)  # (tokens,) document of each token
        n = self.n_centroids or default_centroids(len(docs.tokens))
        self.centroids = kmeans(docs.tokens, n, seed=self.seed)  # (C, dim), unit rows
        self.codes = np.concatenate([(docs.tokens[s:s + 65536] @ self.centroids.T).argmax(dim=1).numpy()
                                     for s in range(0, len(docs.tokens), 65536)] or [np.zeros(0, np.int64)])
        pairs = np.unique(self.codes.astype(np.int64) * len(docs) + owner)  # (centroid, document), sorted
        self.list_docs = pairs % len(docs)
        self.list_ptr = np.searchsorted(pairs // len(docs), np.arange(len(self.centroids) + 1))
        self.n_docs = len(docs)

    def label(self) -> str:
        """The search's settings, as evaluation rows name it."""
        refine = f",refine{self.refine}" if self.refine > self.candidates else ""
        return f"-candidates({self.candidates},nprobe{self.nprobe}{refine})"

    def index_bytes_per_doc(self) -> float:
        return RepScorer(self.reps, self.name).index_bytes_per_doc()

    def score(self, queries: Sequence[str], instruction: Optional[str] = None) -> np.ndarray:
        raise L2EError("the ColBERT candidate stage returns top-k lists, not a full score matrix; use search_top_k")

    def approximate(self, sims: np.ndarray) -> np.ndarray:
        """(documents,) probe scores from one query's (tokens, centroids) similarities: stage 1."""
        n_tok = len(sims)
        probe = min(self.nprobe, sims.shape[1])
        cents = np.argpartition(-sims, probe - 1, axis=1)[:, :probe]  # each token's probed centroids
        values = np.take_along_axis(sims, cents, 1)
        order = np.argsort(-values, axis=1, kind="stable")  # best first, so a document's first hit is its best
        cents, values = np.take_along_axis(cents, order, 1).ravel(), np.take_along_axis(values, order, 1).ravel()
        lengths = self.list_ptr[cents + 1] - self.list_ptr[cents]
        docs = self.list_docs[spans(self.list_ptr[cents], lengths)[0]]
        token = np.repeat(np.arange(n_tok).repeat(probe), lengths)
        _, first = np.unique(token * self.n_docs + docs, return_index=True)  # (token, document): its best probe
        return np.bincount(docs[first], weights=np.repeat(values, lengths)[first],
                           minlength=self.n_docs).astype(np.float32) / max(1, n_tok)

    def interact(self, sims: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) MaxSim of the documents ``rows`` with each token replaced by its centroid: stage 2."""
        docs: TokenVectors = self.reps.docs[self.name]
        idx, seg = spans(docs.offsets[rows], docs.lengths[rows])
        codes = self.codes[idx]
        table = np.ascontiguousarray(sims.T)  # (centroids, Sq): a token's row is one contiguous copy
        return np.maximum.reduceat(table.take(codes, axis=0), seg, axis=0).mean(axis=1)

    def top_k(self, queries: Sequence[str], k: int, instruction: Optional[str] = None):
        q_vectors = self.reps.queries(queries, instruction)[self.name]
        docs: TokenVectors = self.reps.docs[self.name]
        n_cand = min(self.n_docs, self.candidates)  # only exactly scored documents are returned (as rescoring does)
        n_refine = min(self.n_docs, max(self.refine, n_cand))
        scores = np.full((len(q_vectors), n_cand), -np.inf, dtype=np.float32)
        idx = np.zeros((len(q_vectors), n_cand), dtype=np.int64)
        for i, q in enumerate(q_vectors):
            if not len(q):  # a query without token vectors scores 0 everywhere (as exhaustive MaxSim does)
                scores[i], idx[i] = 0.0, np.arange(n_cand)
                continue
            sims = (torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)) @ self.centroids.T).numpy()
            _, pool = top_k(self.approximate(sims)[None], n_refine)
            pool = pool[0]
            if n_refine > n_cand:
                _, keep = top_k(self.interact(sims, pool)[None], n_cand)
                pool = pool[keep[0]]
            scores[i], idx[i] = docs.maxsim_rows(q, pool), pool
        scores, idx = rank_rows(scores, idx)
        return scores[:, :k], idx[:, :k]


def default_centroids(n_tokens: int) -> int:
    """PLAID's rule of thumb, a power of two near 16 * sqrt(tokens), kept between 1 and 4096 and below the tokens."""
    if n_tokens < 2:
        return 1
    return int(min(4096, n_tokens, 2 ** int(np.floor(np.log2(16 * np.sqrt(n_tokens))))))


def kmeans(points: torch.Tensor, n: int, iters: int = 10, sample: int = 65536, seed: int = 0) -> torch.Tensor:
    """Spherical k-means (cosine) of unit rows: ``n`` unit centroids, from a seeded sample of ``points``."""
    g = torch.Generator().manual_seed(seed)
    pts = points[torch.randperm(len(points), generator=g)[:sample]] if len(points) > sample else points
    cents = pts[torch.randperm(len(pts), generator=g)[:n]].clone()
    for _ in range(iters):
        assign = (pts @ cents.T).argmax(dim=1)
        sums = torch.zeros_like(cents).index_add_(0, assign, pts)
        counts = torch.bincount(assign, minlength=n)
        cents = torch.where(counts[:, None] > 0, torch.nn.functional.normalize(sums, dim=1), cents)
    return cents


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


class ChunkedScorer:
    """Dense search over long documents encoded in chunks (``Embedder.encode(..., chunking=)``: maxp or late): a
    document's score is its best chunk's cosine (max-passage, Dai & Callan 2019). Queries come whole from ``reps``."""

    def __init__(self, reps: "Reps", mode: str, chunk_tokens: int, max_length: Optional[int] = None):
        self.reps, self.mode, self.chunk_tokens, self.max_length = reps, mode, chunk_tokens, max_length
        self._key = None

    def index(self, texts: Sequence[str]) -> None:
        key = (len(texts), hash(tuple(texts)))
        if key == self._key:
            return
        embedder = self.reps.embedder
        chunks = embedder.encode_corpus(texts, chunking=self.mode, chunk_tokens=self.chunk_tokens,
                                        max_length=self.max_length, **self.reps.options)
        self.vectors = np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), np.float32)
        self.starts = np.cumsum([0] + [len(c) for c in chunks[:-1]]).astype(np.int64)  # each document's first chunk
        self.n_docs, self._key = len(chunks), key

    def index_bytes_per_doc(self) -> float:
        return float(self.vectors.size * 4) / max(1, self.n_docs)

    def score(self, queries: Sequence[str], instruction: Optional[str] = None) -> np.ndarray:
        q = self.reps.queries(queries, instruction)["dense"]
        return np.maximum.reduceat(q @ self.vectors.T, self.starts, axis=1) if self.n_docs else q[:, :0]


class QuantizedScorer:
    """Dense search over int8 or binary codes of the first ``dim`` coordinates (``l2e.retrieval.quantize``): the
    int8 ranges calibrated on a seeded sample of ``calibration`` corpus vectors, the queries quantized with them,
    optionally the best ``rescore`` re-scored with the float query."""

    def __init__(self, reps: "Reps", precision: str, dim: Optional[int] = None, rescore: int = 0,
                 calibration: int = 10000, seed: int = 0):
        from l2e.retrieval.quantize import check_precision

        self.reps, self.precision, self.dim, self.rescore = reps, check_precision(precision), dim, rescore
        self.calibration, self.seed = calibration, seed

    def index(self, texts: Sequence[str]) -> None:
        from l2e.retrieval.quantize import calibrate, quantize

        self.reps.index(texts)
        docs = truncate_normalize(self.reps.docs["dense"], self.dim)
        self.width = docs.shape[1]
        sample = np.random.default_rng(self.seed).permutation(len(docs))[:self.calibration]
        self.ranges = calibrate(docs[np.sort(sample)]) if self.precision == "int8" else None
        self.codes = quantize(docs, self.precision, self.ranges)

    def index_bytes_per_doc(self) -> float:
        from l2e.retrieval.quantize import bytes_per_vector

        return float(bytes_per_vector(self.width, self.precision))

    def score(self, queries: Sequence[str], instruction: Optional[str] = None) -> np.ndarray:
        from l2e.retrieval.quantize import first_stage_scores

        q = truncate_normalize(self.reps.queries(queries, instruction)["dense"], self.dim)
        return first_stage_scores(q, self.codes, self.precision, self.ranges, self.width)

    def top_k(self, queries: Sequence[str], k: int, instruction: Optional[str] = None):
        q = truncate_normalize(self.reps.queries(queries, instruction)["dense"], self.dim)
        return quantized_top_k(q, self.codes, k, self.precision, self.ranges, self.width, self.rescore)


def truncate_normalize(emb: np.ndarray, dim: Optional[int]) -> np.ndarray:
    """Matryoshka prefix of ``dim`` coordinates, L2-normalised again. (n, D) -> (n, dim)."""
    if dim is None or dim == emb.shape[1]:
        return emb
    out = emb[:, :dim].astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


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
    """``(scores, indices)`` of any scorer here, both (n_queries, k), ranked by :func:`top_k`. A scorer with its own
    ``top_k`` (a candidate stage, a quantized index with rescoring) returns its lists itself."""
    search = getattr(scorer, "top_k", None) or (lambda texts, k, inst: top_k(scorer.score(texts, inst), k))
    parts = [search(queries[start:start + block], k, instruction) for start in blocks(len(queries), block, show_progress)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class MtebSearch:
    """An MTEB ``SearchProtocol``: ``index`` the corpus with a scorer, ``search`` returns each query's top_k."""

    def __init__(self, scorer, name: str, block: int = 256, dim: int = 0):
        from mteb.models.model_meta import ModelMeta

        self.scorer, self.name, self.block, self.dim = scorer, name, block, dim  # dim: the size it scores (0: n/a)
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


def quantized_top_k(query: np.ndarray, codes: np.ndarray, k: int, precision: str, ranges: Optional[np.ndarray],
                    dim: int, rescore_k: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(scores, indices)`` of a block of float queries, best first: the first stage's top ``k``; with
    ``rescore_k``, its top ``rescore_k`` re-scored with the float query and re-ranked -- then a query's list holds
    ``min(k, rescore_k)`` documents (as sentence-transformers' rescoring: only re-scored candidates are returned,
    so Recall@100 needs ``rescore_k >= 100``)."""
    from l2e.retrieval.quantize import first_stage_scores, rescore

    scores = first_stage_scores(query, codes, precision, ranges, dim)
    if not rescore_k or precision == "float32":
        return top_k(scores, k)
    _, idx = top_k(scores, rescore_k)
    rescored, idx = rank_rows(rescore(query, codes, idx, precision, ranges, dim).astype(np.float32), idx)
    return rescored[:, :k], idx[:, :k]
