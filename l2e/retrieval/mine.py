"""Hard-negative mining (the library behind ``mine.py``): retrieve each query's nearest passages with an
embedding model, keep a rank window, drop likely false negatives, sample N negatives per row.

Input: FlagEmbedding-style JSONL (``{"query": str, "pos": [str], "neg": [str], ...}``, see ``l2e.data.read``).
The candidate pool is every distinct ``pos`` text of the input, plus the ``--corpus`` texts when given
(positives stay in the pool so each has a score and an exact copy of a positive is recognised as one).

Selection (FlagEmbedding's ``range_for_sampling``, NV-Retriever's positive-aware filters): rank the pool by
inner product (cosine: embeddings are unit vectors), keep 0-based ranks [START, END) of ``--range START-END``,
drop the row's positives, the positives of other rows with the same query and the query text itself, drop a
candidate scoring above ``relative_margin x pos_score`` ("TopK-PercPos", 0.95 in the paper) or above
``pos_score - absolute_margin`` ("TopK-MarginPos"), where pos_score is the row's best positive; then sample ``--negative_number`` of the rest with a per-row seeded
RNG (kept in rank order). Rows left with fewer keep what they have.

A cross-encoder teacher (``--cross_encoder``, a sentence-transformers ``CrossEncoder`` folder) re-scores the
first stage's top END candidates and each row's positives; ranks, window, filters and written scores are then
the cross-encoder's (FlagEmbedding's reranker-as-teacher).

Output: the input rows, other fields kept, with ``neg``, ``neg_scores`` and ``pos_scores`` (the miner's scores,
usable as distillation targets) replaced; or with ``--output_format parquet`` F2LLM columns
``query``, ``passage``, ``negative_1`` ... ``negative_N`` (one row per positive; rows with fewer than N
negatives are dropped, the count is printed). ``OUT.stats.json`` next to the output holds the counts and
times. Search is exact (``l2e.retrieval.search.dense_top_k``): query blocks x the whole pool (memory block x
pool, never pool x pool), or ``faiss.IndexFlatIP`` with ``--faiss`` (``pip install faiss-cpu``). Problems with the
arguments or the data end the run with one line on stderr (exit status 2).
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from l2e.config import ConfigError, is_hub_id, resolve_package_path
from l2e.core.atomic import atomic_file, write_json
from l2e.core.cli import option, parse_weights
from l2e.core.errors import L2EError
from l2e.data.read import DataError, iter_json_lines, iter_raw_rows, titled_text
from l2e.model.heads import HEADS
from l2e.model.precision import PRECISIONS
from l2e.model.settings import POOLING_MODES, SETTINGS_FILE
from l2e.retrieval.search import dense_top_k, group_by_prompt, rank_rows, top_k

FAISS_AUTO = 1_000_000  # pools this large use faiss when it is installed (multi-threaded BLAS, same results)


def scorer_names() -> tuple:
    """What ``--scorer`` may name: dense, every registered head, their hybrid, BM25."""
    return ("dense", *HEADS, "hybrid", "bm25")




class MineError(L2EError, ValueError):
    """A bad argument for ``mine.py``; the message names the option, the value and the fix."""


# --- the maths: pure functions of unit-vector arrays (search itself is l2e.retrieval.search's) ---------------


def mine_negatives(query_emb: np.ndarray, corpus_emb: np.ndarray, pos_index: List[List[int]], *,
                   range_start: int, range_end: int, num_neg: int, relative_margin: Optional[float] = None,
                   absolute_margin: Optional[float] = None, seed: int = 0, block: int = 1024,
                   exclude: Optional[List[List[int]]] = None, use_faiss: bool = False,
                   show_progress: bool = False):
    """Hard negatives per query: ``(neg_indices, neg_scores, pos_scores, stats)``.

    query_emb (n, dim) and corpus_emb (pool, dim) are unit vectors; ``pos_index[i]`` are row i's positives
    (rows of corpus_emb, at least one), ``exclude[i]`` more pool rows never to use for row i (e.g. the
    query's own text). Candidates are 0-based ranks [range_start, range_end) of row i's retrieval over the
    whole pool. Dropped: positives and excluded rows; score > relative_margin * pos_score; score >
    pos_score - absolute_margin (pos_score = row i's best positive). Of the rest, ``num_neg`` are sampled
    with ``np.random.default_rng([seed, i])`` (independent of other rows and of ``block``) and returned in
    rank order. ``pos_scores[i]`` is pos_score; ``stats`` counts the drops and negatives per row.
    """
    _check_mine_args(query_emb, corpus_emb, pos_index, range_start, range_end, num_neg, exclude)
    scores, idx = dense_top_k(query_emb, corpus_emb, range_end, block, use_faiss, show_progress)
    pos_scores = [float(np.max(corpus_emb[p] @ query_emb[i])) for i, p in enumerate(pos_index)]
    return select_negatives(scores, idx, pos_scores, pos_index, range_start=range_start, num_neg=num_neg,
                            relative_margin=relative_margin, absolute_margin=absolute_margin, seed=seed,
                            exclude=exclude)


def select_negatives(scores: np.ndarray, idx: np.ndarray, pos_scores: List[float], pos_index: List[List[int]], *,
                     range_start: int, num_neg: int, relative_margin: Optional[float] = None,
                     absolute_margin: Optional[float] = None, seed: int = 0,
                     exclude: Optional[List[List[int]]] = None):
    """The selection of :func:`mine_negatives` on ranked candidates ``(scores, idx)`` (n, END) from any search."""
    neg_indices, neg_scores, drops = [], [], Counter()
    for i in range(len(idx)):
        banned = set(pos_index[i]) | set(exclude[i] if exclude else ())
        keep, row_drops = filter_window(idx[i, range_start:], scores[i, range_start:], banned, pos_scores[i],
                                        relative_margin, absolute_margin)
        drops.update(row_drops)
        chosen = sample_in_rank_order(len(keep), num_neg, np.random.default_rng([seed, i]))
        neg_indices.append([int(idx[i, range_start + keep[c]]) for c in chosen])
        neg_scores.append([float(scores[i, range_start + keep[c]]) for c in chosen])
    return neg_indices, neg_scores, pos_scores, mine_stats(neg_indices, num_neg, drops)


def scorer_candidates(scorer, rows: List[dict], pos_index: List[List[int]], k: int, default_instruction: str,
                      block: int = 256, show_progress: bool = False):
    """``(scores, idx, pos_scores)`` of every row with an ``l2e.retrieval.search`` scorer (a head, hybrid, BM25):
    the top ``k`` of the indexed pool (ties by pool index) and each positive's score. A row's ``prompt`` replaces the
    default instruction."""
    n = len(rows)
    scores, idx = np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
    pos_scores = [0.0] * n
    groups = group_by_prompt([row.get("prompt") for row in rows])
    work = [(prompt, members[s:s + block]) for prompt, members in groups.items()
            for s in range(0, len(members), block)]
    if show_progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc="search", unit="block")
    for prompt, members in work:
        instruction = default_instruction if prompt is None else prompt
        full = scorer.score([rows[i]["query"] for i in members], instruction)  # (block, pool)
        kk = min(k, full.shape[1])
        scores[members, :kk], idx[members, :kk] = top_k(full, kk)
        for r, i in enumerate(members):
            pos_scores[i] = [float(v) for v in full[r, pos_index[i]]]
    return scores, idx, pos_scores


def rerank_candidates(predict, queries: Sequence[str], texts: Sequence[str], idx: np.ndarray,
                      pos_index: List[List[int]]):
    """A cross-encoder teacher over a first stage's candidates: ``(scores, idx, pos_scores)`` like
    :func:`scorer_candidates`, re-ranked by the teacher (ties by pool index).

    ``predict(pairs) -> scores`` scores (query, passage) pairs; row i's pairs are its candidates ``idx[i]`` and its
    positives, each distinct (query, pool row) once however many rows share the query. The window and the
    false-negative filters then run on the teacher's ranks and scores, as FlagEmbedding does with a reranker.
    """
    wanted = {}
    for i, query in enumerate(queries):
        for j in [*idx[i].tolist(), *pos_index[i]]:
            wanted.setdefault((query, int(j)), len(wanted))
    pairs = list(wanted)
    teacher = np.asarray(predict([(q, texts[j]) for q, j in pairs]), dtype=np.float32).reshape(-1)
    if len(teacher) != len(pairs) or not np.all(np.isfinite(teacher)):
        raise MineError(f"--cross_encoder gave {len(teacher)} scores for {len(pairs)} pairs"
                        + ("" if len(teacher) != len(pairs) else " with NaN or inf among them"))
    scores = np.array([[teacher[wanted[(q, int(j))]] for j in row] for q, row in zip(queries, idx)], np.float32)
    pos_scores = [[float(teacher[wanted[(q, j)]]) for j in pos] for q, pos in zip(queries, pos_index)]
    return (*rank_rows(scores, idx), pos_scores)


def load_cross_encoder(path: str, max_length: Optional[int], batch_size: int, precision):
    """``predict(pairs)`` of a sentence-transformers ``CrossEncoder`` folder: one score per pair (a one-label
    model's sigmoid, as ``CrossEncoder.predict`` gives it), under the run's precision."""
    from sentence_transformers import CrossEncoder

    from l2e.model.precision import autocast

    model = CrossEncoder(path, device="cpu", max_length=max_length, local_files_only=True)
    if model.num_labels != 1:
        raise MineError(f"--cross_encoder {path!r} has {model.num_labels} labels; a teacher needs a relevance "
                        "model with one (a reranker such as ms-marco-MiniLM-L6-v2 or bge-reranker)")

    def predict(pairs):
        with torch.inference_mode(), autocast(precision):
            return model.predict(pairs, batch_size=batch_size, show_progress_bar=True, convert_to_numpy=True)

    return predict


def _check_mine_args(query_emb, corpus_emb, pos_index, range_start, range_end, num_neg, exclude) -> None:
    if query_emb.ndim != 2 or corpus_emb.ndim != 2 or query_emb.shape[1] != corpus_emb.shape[1]:
        raise ValueError(f"query_emb {query_emb.shape} and corpus_emb {corpus_emb.shape} must be (n, dim) and "
                         "(pool, dim) with the same dim")
    if len(pos_index) != len(query_emb) or (exclude is not None and len(exclude) != len(query_emb)):
        raise ValueError(f"pos_index / exclude need one list per query ({len(query_emb)})")
    if any(not p for p in pos_index):
        raise ValueError("every query needs at least one positive in pos_index")
    if not 0 <= range_start < range_end or num_neg < 1:
        raise ValueError(f"need 0 <= range_start < range_end and num_neg >= 1 "
                         f"(got {range_start}, {range_end}, {num_neg})")


def filter_window(window_idx: np.ndarray, window_scores: np.ndarray, banned: set, pos_score: float,
                  relative_margin: Optional[float], absolute_margin: Optional[float]):
    """Positions in the window that survive the false-negative filters, and why the others were dropped
    (each counted once, under the first rule that drops it: ``positive_or_query``, ``relative_margin``,
    ``absolute_margin``)."""
    is_banned = np.isin(window_idx, list(banned))
    too_close_rel = (window_scores > relative_margin * pos_score) if relative_margin is not None else False
    too_close_abs = (window_scores > pos_score - absolute_margin) if absolute_margin is not None else False
    too_close_rel = np.asarray(too_close_rel) & ~is_banned
    too_close_abs = np.asarray(too_close_abs) & ~is_banned & ~too_close_rel
    keep = np.flatnonzero(~(is_banned | too_close_rel | too_close_abs))
    drops = {"positive_or_query": int(is_banned.sum()), "relative_margin": int(np.sum(too_close_rel)),
             "absolute_margin": int(np.sum(too_close_abs))}
    return keep, drops


def sample_in_rank_order(n: int, k: int, rng: np.random.Generator) -> List[int]:
    """``k`` of ``range(n)`` without replacement (all of them when n <= k), ascending."""
    if n <= k:
        return list(range(n))
    return sorted(int(c) for c in rng.choice(n, size=k, replace=False))


def mine_stats(neg_indices: List[List[int]], num_neg: int, drops: Counter) -> Dict:
    counts = [len(n) for n in neg_indices]
    return {
        "rows": len(counts),
        "negatives_per_row": {
            "mean": float(np.mean(counts)) if counts else 0.0,
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "histogram": {str(c): n for c, n in sorted(Counter(counts).items())},
        },
        "rows_short": sum(c < num_neg for c in counts),
        "dropped": {key: int(drops.get(key, 0)) for key in ("positive_or_query", "relative_margin", "absolute_margin")},
    }


# --- options --------------------------------------------------------------------------------------------


@dataclass
class MineOptions:
    """What ``mine.py`` takes: each field is its ``--option`` (``l2e.core.cli``), defined only here."""

    input: str = option(help="FlagEmbedding-style JSONL: query, pos, neg (...)", group="input, output, model")
    output: str = option(help="OUT.jsonl (or .parquet); OUT.stats.json is written next to it")
    output_format: str = option("jsonl", "OUT's format: FlagEmbedding JSONL or F2LLM parquet columns",
                                choices=("jsonl", "parquet"))
    model: str = option("", "l2e checkpoint, HF / sentence-transformers folder, .gguf, pkg:... (not needed with "
                        "--scorer bm25)")
    gguf_file: str = option("", "GGUF file inside --model when --model is a folder")
    corpus: Optional[str] = option(None, "extra candidate pool: JSONL of {\"text\": ...} or a BEIR corpus.jsonl")
    range: str = option("10-100", "0-based rank window START-END (END excluded)", group="selection")
    negative_number: int = option(15, "negatives sampled per row")
    relative_margin: Optional[float] = option(None, "drop score > margin x pos_score (e.g. 0.95)")
    absolute_margin: Optional[float] = option(None, "drop score > pos_score - margin (e.g. 0.05)")
    seed: int = option(0, "seed of each row's negative sampling")
    pooling: Optional[str] = option(None, "default: the checkpoint's / sentence-transformers'", choices=POOLING_MODES,
                                    group="encoding")
    bi_attn: bool = option(False, "bidirectional attention (default: a checkpoint's own, else off)")
    query_instruction: Optional[str] = option(None, "default: the checkpoint's, else none; a row's prompt wins")
    max_length: Optional[int] = option(None, "token cap for queries and passages (default: the model's)")
    batch_size: int = option(32, "texts per encoder batch")
    precision: str = option("fp32", "encoder arithmetic: bf16 autocast, or auto (bf16 where the CPU has it "
                            "natively and it is faster)", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the encoder (inductor, frozen weights): 1.07-1.7x faster after a "
                           "one-off compile (~1.5 min for SmolLM2 on 2 CPU cores); needs g++ on CPU")
    scorer: str = option("dense", "what ranks the pool: the model's dense vectors or one of its heads, their hybrid "
                         "(fused, min-max normalised scores), or BM25 (bm25s; no model)", choices=scorer_names,
                         group="search")
    hybrid_weights: Optional[dict] = option(None, "--scorer hybrid: e.g. dense=1,sparse=0.3,bm25=0.5 (default: the "
                                            "model's fusion weights)", type=parse_weights)
    cross_encoder: str = option("", "a sentence-transformers CrossEncoder folder (pkg:... too) that re-scores the "
                                "first stage's top END candidates and each positive: the window, the filters and "
                                "the written scores are then the cross-encoder's")
    block: int = option(1024, "queries scored per search block")
    faiss: bool = option(False, "search with faiss.IndexFlatIP (pip install faiss-cpu)")
    max_rows: int = option(0, "mine only the first N rows (0 = all)")

    @property
    def window(self) -> Tuple[int, int]:
        return parse_range(self.range)


def parse_range(text: str) -> Tuple[int, int]:
    start, sep, end = text.partition("-")
    if sep and start.strip().isdigit() and end.strip().isdigit() and int(start) < int(end):
        return int(start), int(end)
    raise MineError(f"--range {text!r}: expected START-END with 0 <= START < END (0-based ranks), e.g. 10-100")


def check_options(o: MineOptions) -> None:
    """Every problem with the options, found at once, before any data or model is loaded."""
    problems = []
    try:
        o.window
    except MineError as e:
        problems.append(str(e))
    for path, flag in ((o.input, "--input"), (o.corpus, "--corpus")):
        if path and not os.path.isfile(path):
            problems.append(f"{flag} {path!r}: file not found")
    if not o.input.endswith(".jsonl"):
        problems.append(f"--input {o.input!r}: expected a .jsonl file (query, pos, neg per line)")
    for name in ("negative_number", "batch_size", "block"):
        if getattr(o, name) < 1:
            problems.append(f"--{name}={getattr(o, name)} must be >= 1")
    if o.max_rows < 0:
        problems.append(f"--max_rows={o.max_rows} must be >= 0")
    if o.relative_margin is not None and not 0 < o.relative_margin <= 1:
        problems.append(f"--relative_margin {o.relative_margin}: expected a fraction in (0, 1], e.g. 0.95")
    if o.absolute_margin is not None and o.absolute_margin < 0:
        problems.append(f"--absolute_margin {o.absolute_margin}: expected >= 0, e.g. 0.05")
    if o.faiss and importlib.util.find_spec("faiss") is None:
        problems.append("--faiss: faiss is not installed (pip install faiss-cpu, or leave --faiss out)")
    if o.scorer not in scorer_names():
        problems.append(f"--scorer {o.scorer!r}: use one of {', '.join(scorer_names())}")
    if o.scorer != "dense" and o.faiss:
        problems.append("--faiss searches dense vectors only; leave it out with --scorer " + o.scorer)
    if os.path.isdir(o.output):
        problems.append(f"--output {o.output!r} is a folder; name the file to write, e.g. {o.output.rstrip('/')}/"
                        "mined.jsonl")
    if o.cross_encoder:
        o.cross_encoder = resolve_package_path(o.cross_encoder)
        if not os.path.isfile(os.path.join(o.cross_encoder, "config.json")):
            problems.append(f"--cross_encoder {o.cross_encoder!r}: not a model folder (no config.json); give a "
                            "sentence-transformers CrossEncoder folder")
    if o.corpus and os.path.isfile(o.corpus) and os.path.getsize(o.corpus) == 0:
        problems.append(f"--corpus {o.corpus!r} is empty; give a file of {{\"text\": ...}} lines or leave --corpus out")
    if os.path.abspath(o.output) == os.path.abspath(o.input):
        problems.append(f"--output {o.output!r} is the input file; write the mined rows elsewhere")
    try:
        if not o.model and o.scorer != "bm25":
            raise ConfigError("--model", [f"--model is needed for --scorer {o.scorer} (only bm25 needs none)"])
        o.model = resolve_package_path(o.model) if o.model else ""
        if o.model and not os.path.exists(o.model) and not is_hub_id(o.model):
            problems.append(f"--model {o.model!r}: no such file or folder (an l2e checkpoint, a Hugging Face / "
                            "sentence-transformers folder or a .gguf file)")
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise MineError("; ".join(problems))


def load_rows(path: str, max_rows: int) -> List[dict]:
    """The input's JSON objects (every field kept), validated by ``l2e.data.read`` (errors name file:line)."""
    for n, _ in enumerate(iter_raw_rows(path, "jsonl"), start=1):  # validation only
        if n == max_rows:
            break
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if len(rows) == max_rows:
                    break
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def read_corpus(path: str) -> List[str]:
    """Texts of a ``{"text": ...}`` JSONL (a BEIR corpus.jsonl too: ``title`` is joined before the text)."""
    texts = []
    for where, obj in iter_json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(f'{where}: expected {{"text": "..."}} (optionally "_id", "title")')
        texts.append(titled_text(obj))
    return texts


def build_pool(rows: List[dict], corpus_texts: Sequence[str] = ()):
    """``(texts, pos_index, exclude)``: distinct texts (positives first, then the extra corpus), each row's
    positives as pool rows, and per row the pool rows never to use as its negatives: the positives of every
    row with the same query text (Debian's "GNU C preprocessor" has 18 rows, one per cpp version: each
    row's positive is a true answer for the others) and the query text itself when it is also a passage."""
    where: Dict[str, int] = {}
    for text in [p for row in rows for p in row["pos"]] + list(corpus_texts):
        where.setdefault(text, len(where))
    pos_index = [[where[p] for p in row["pos"]] for row in rows]
    answers: Dict[str, List[int]] = {}
    for row, pos in zip(rows, pos_index):
        answers.setdefault(row["query"], []).extend(pos)
    exclude = []
    for row, pos in zip(rows, pos_index):
        query_text = {where[row["query"]]} if row["query"] in where else set()
        exclude.append(sorted((set(answers[row["query"]]) | query_text) - set(pos)))
    return list(where), pos_index, exclude


def load_embedder(args: MineOptions):
    """An l2e checkpoint (folder with l2e_model.json) with its settings, or any plain model."""
    from l2e.retrieval.embedder import Embedder

    if os.path.isfile(os.path.join(args.model, SETTINGS_FILE)):
        overrides = {k: v for k, v in {"pooling_mode": args.pooling, "bi_attn_enabled": args.bi_attn}.items() if v}
        return Embedder.from_checkpoint(args.model, precision=args.precision, query_instruction=args.query_instruction,
                                        max_length=args.max_length, compile=args.compile, **overrides)
    return Embedder.from_pretrained(args.model, pooling=args.pooling, bi_attn=args.bi_attn,
                                    query_instruction=args.query_instruction or "", max_length=args.max_length,
                                    gguf_file=args.gguf_file, precision=args.precision, compile=args.compile)


def encode_queries(embedder, rows: List[dict], batch_size: int) -> np.ndarray:
    """(rows, dim): each distinct (prompt, query) once; a row's ``prompt`` replaces the default instruction."""
    keys = [(row.get("prompt"), row["query"]) for row in rows]
    distinct = list(dict.fromkeys(keys))
    by_prompt = group_by_prompt([prompt for prompt, _ in distinct])
    emb = np.zeros((len(distinct), embedder.dim), dtype=np.float32)
    for prompt, members in by_prompt.items():
        instruction = embedder.query_instruction if prompt is None else prompt
        emb[members] = embedder.encode_queries([distinct[j][1] for j in members], instruction=instruction or None,
                                               batch_size=batch_size, show_progress=True)
    position = {key: j for j, key in enumerate(distinct)}
    return emb[[position[key] for key in keys]]


def mined_rows(rows, texts, negs, neg_scores, positive_scores: List[List[float]]) -> List[dict]:
    """Input rows with ``neg``, ``neg_scores`` and ``pos_scores`` (one per positive) from the miner."""
    return [{**row, "neg": [texts[j] for j in negs[i]], "neg_scores": [round(s, 6) for s in neg_scores[i]],
             "pos_scores": [round(float(s), 6) for s in positive_scores[i]]} for i, row in enumerate(rows)]


def write_jsonl(path: str, rows: List[dict]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    _atomic_write(path, write)


def write_parquet(path: str, rows: List[dict], num_neg: int) -> int:
    """F2LLM columns, one row per positive, rows with all ``num_neg`` negatives only; returns rows dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    full = [row for row in rows if len(row["neg"]) >= num_neg]
    columns = {"query": [r["query"] for r in full for _ in r["pos"]], "passage": [p for r in full for p in r["pos"]]}
    for n in range(num_neg):
        columns[f"negative_{n + 1}"] = [r["neg"][n] for r in full for _ in r["pos"]]
    if any("prompt" in r for r in full):
        columns["prompt"] = [r.get("prompt") for r in full for _ in r["pos"]]
    table = pa.table(columns, schema=pa.schema([(c, pa.string()) for c in columns]))
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return len(rows) - len(full)


def _atomic_write(path: str, write) -> None:
    """A killed run never leaves a half-written file under the final name."""
    with atomic_file(path) as tmp:
        write(tmp)


def stats_path(output: str) -> str:
    return os.path.splitext(output)[0] + ".stats.json"


def run(o: MineOptions) -> Dict:
    """Check, read, encode, mine, write; returns the stats also written to ``OUT.stats.json``."""
    check_options(o)
    (range_start, range_end), times, t0 = o.window, {}, time.perf_counter()
    rows = load_rows(o.input, o.max_rows)
    texts, pos_index, exclude = build_pool(rows, read_corpus(o.corpus) if o.corpus else ())
    tick = time.perf_counter()
    embedder = load_embedder(o) if o.scorer != "bm25" else None
    times["load_model_s"] = time.perf_counter() - tick
    if embedder is not None:
        print(f"precision: {embedder.precision.name} ({embedder.precision.reason})", flush=True)
    selection = dict(range_start=range_start, num_neg=o.negative_number, relative_margin=o.relative_margin,
                     absolute_margin=o.absolute_margin, seed=o.seed, exclude=exclude)
    if o.scorer == "dense":
        tick = time.perf_counter()
        query_emb = encode_queries(embedder, rows, o.batch_size)
        times["encode_queries_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        corpus_emb = embedder.encode_corpus(texts, batch_size=o.batch_size, show_progress=True)
        times["encode_corpus_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        use_faiss = o.faiss or (len(texts) >= FAISS_AUTO and importlib.util.find_spec("faiss") is not None)
        scores, idx = dense_top_k(query_emb, corpus_emb, range_end, o.block, use_faiss, show_progress=True)
        positive_scores = [[float(v) for v in corpus_emb[p] @ query_emb[i]] for i, p in enumerate(pos_index)]
    else:
        tick = time.perf_counter()
        scorer = build_scorer(o, embedder)
        scorer.index(texts)
        times["index_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        default = embedder.query_instruction if embedder is not None else ""
        scores, idx, positive_scores = scorer_candidates(scorer, rows, pos_index, min(range_end, len(texts)),
                                                         default, o.block, show_progress=True)
    times["search_s"] = time.perf_counter() - tick
    if o.cross_encoder:
        tick = time.perf_counter()
        from l2e.model.precision import resolve_precision

        precision = embedder.precision if embedder is not None else resolve_precision(o.precision, "cpu")
        predict = load_cross_encoder(o.cross_encoder, o.max_length, o.batch_size, precision)
        scores, idx, positive_scores = rerank_candidates(predict, [row["query"] for row in rows], texts, idx,
                                                         pos_index)
        times["cross_encoder_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    negs, neg_scores, _, stats = select_negatives(scores, idx, [max(p) for p in positive_scores], pos_index,
                                                  **selection)
    times["select_s"] = time.perf_counter() - tick
    out = mined_rows(rows, texts, negs, neg_scores, positive_scores)
    if o.output_format == "parquet":
        stats["parquet_rows_dropped_short"] = write_parquet(o.output, out, o.negative_number)
    else:
        write_jsonl(o.output, out)
    times["total_s"] = time.perf_counter() - t0
    stats = {"input": o.input, "output": o.output, "model": o.model, "scorer": o.scorer,
             "cross_encoder": o.cross_encoder or None, "pool": len(texts),
             "range": [range_start, range_end], "negative_number": o.negative_number,
             "relative_margin": o.relative_margin, "absolute_margin": o.absolute_margin, "seed": o.seed,
             "precision": embedder.precision.name if embedder is not None else None, **stats, "time": {k: round(v, 2) for k, v in times.items()}}
    write_json(stats_path(o.output), stats, newline=False, indent=2)
    return stats


def build_scorer(o: MineOptions, embedder):
    """The ``l2e.retrieval.search`` scorer ``--scorer`` names: a head of the model, their hybrid, or BM25."""
    from l2e.retrieval.search import BM25Scorer, FusedScorer, Reps, RepScorer

    if o.scorer == "bm25":
        return BM25Scorer()
    heads = list(embedder.model.heads)
    if o.scorer != "hybrid":
        if o.scorer not in heads:
            raise MineError(f"--scorer {o.scorer}: the model has no such head (it has: {', '.join(['dense', *heads])})")
        return RepScorer(Reps(embedder, [o.scorer], batch_size=o.batch_size, show_progress=True), o.scorer)
    weights = o.hybrid_weights or dict(embedder.model.settings.hybrid_weights) or {"dense": 1.0}
    unknown = [n for n in weights if n not in heads + ["dense", "bm25"]]
    if unknown:
        raise MineError(f"--hybrid_weights: the model has no {', '.join(unknown)} head")
    reps = Reps(embedder, [n for n in weights if n != "bm25"], batch_size=o.batch_size, show_progress=True)
    scorers = {n: (BM25Scorer() if n == "bm25" else RepScorer(reps, n)) for n in weights}
    return FusedScorer(scorers, weights)
