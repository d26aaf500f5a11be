"""MTEB plumbing: an l2e Embedder as an MTEB encoder, a local BEIR folder as an MTEB retrieval task.

MTEB computes every number here (nDCG, MRR, recall, MAP via its RetrievalEvaluator); this module only
adapts the two ends. Local folders become ``AbsTaskRetrieval`` subclasses whose ``load_data`` reads
``corpus.jsonl`` / ``queries.jsonl`` / ``qrels.tsv`` instead of the hub, so evaluation runs offline.
Matryoshka sizes are scored by one encoding per text: full embeddings are cached and truncated per size.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import datasets
import mteb
import numpy as np
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from l2e.core.errors import L2EError
from l2e.data.read import read_beir
from l2e.retrieval.search import truncate_normalize  # noqa: F401  (re-exported: the tests and callers use it here)

METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100", "map_at_10")
TABLE_COLUMNS = (("nDCG@10", "ndcg_at_10"), ("MRR@10", "mrr_at_10"), ("Recall@10", "recall_at_10"),
                 ("Recall@100", "recall_at_100"))
SPLIT = "test"  # local folders hold one split; MTEB needs a name for it


class EvalError(L2EError, ValueError):
    """A user-facing problem, printed as one line by ``evaluate_mteb.py``."""


# --- reading BEIR folders ------------------------------------------------------------------------------

def load_beir(folder: str) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, Dict[str, int]]]:
    """``l2e.data.read.read_beir`` plus the checks an evaluation needs (documents, and judged queries)."""
    corpus, queries, qrels = read_beir(folder)
    if not corpus:
        raise EvalError(f"{folder}/corpus.jsonl has no documents")
    if not sample_query_ids(qrels, queries, 0):
        raise EvalError(f"{folder}: no query of queries.jsonl has a qrel with score > 0 in qrels.tsv")
    judged = [(q, d) for q, docs in qrels.items() for d, score in docs.items() if score > 0]
    unknown = sorted({d for _, d in judged if d not in corpus})
    if unknown:
        # A relevant document missing from the corpus can never be retrieved: the score would be silently low.
        raise EvalError(f"{folder}/qrels.tsv: {len(unknown)} relevant document id(s) are not in corpus.jsonl "
                        f"(e.g. {', '.join(map(repr, unknown[:3]))}); fix the ids or add the documents")
    return corpus, queries, qrels


def sample_query_ids(qrels: Dict[str, Dict[str, int]], queries: Dict[str, str], n: int, seed: int = 0) -> List[str]:
    """The ids of up to ``n`` judged queries (all when ``n`` is 0), drawn with a fixed seed so runs compare."""
    ids = sorted(q for q in qrels if q in queries and any(s > 0 for s in qrels[q].values()))
    if 0 < n < len(ids):
        ids = sorted(random.Random(seed).sample(ids, n))
    return ids


# --- local BEIR folder as an MTEB task --------------------------------------------------------------------

def _split_data(folder: str, max_queries: int, seed: int) -> dict:
    corpus, queries, qrels = load_beir(folder)
    qids = sample_query_ids(qrels, queries, max_queries, seed)
    return {
        "corpus": Dataset.from_list([{"id": d, "text": text} for d, text in corpus.items()]),
        "queries": Dataset.from_list([{"id": q, "text": queries[q]} for q in qids]),
        "relevant_docs": {q: dict(qrels[q]) for q in qids},
        "top_ranked": None,
    }


def make_beir_task(folder: str, name: Optional[str] = None, *, max_queries: int = 0, seed: int = 0):
    """An MTEB retrieval task (instance, data loaded) that reads ``folder`` instead of the hub."""
    data = _split_data(folder, max_queries, seed)  # read first: a bad folder fails before MTEB is involved
    name = name or os.path.basename(os.path.normpath(folder))
    metadata = TaskMetadata(
        name=name, description=f"Local BEIR folder {folder}", type="Retrieval", category="t2t",
        dataset={"path": os.path.abspath(folder), "revision": "local"}, eval_splits=[SPLIT],
        eval_langs=["eng-Latn"], main_score="ndcg_at_10", modalities=["text"],
    )

    def load_data(self, num_proc=None, **kwargs) -> None:
        if not self.data_loaded:
            self.dataset = {"default": {SPLIT: _split_data(folder, max_queries, seed)}}
            self.data_loaded = True

    # A class per folder: MTEB keeps metadata on the class (unload_data drops instance metadata).
    cls = type(f"LocalBEIR_{re.sub(r'[^0-9A-Za-z_]', '_', name)}", (AbsTaskRetrieval,),
               {"metadata": metadata, "load_data": load_data})
    task = cls()
    task.dataset = {"default": {SPLIT: data}}
    task.data_loaded = True
    return task


def task_names(folders: Sequence[str]) -> List[str]:
    """Folder base names, widened with the parent folder where two would clash (``a/test`` vs ``b/test``)."""
    base = [os.path.basename(os.path.normpath(f)) for f in folders]
    return [b if base.count(b) == 1 else "_".join(Path(os.path.normpath(f)).parts[-2:]) for b, f in zip(base, folders)]


def load_mteb_tasks(names: Sequence[str]) -> list:
    """MTEB's own tasks by name, data loaded now, so an unreachable hub fails before any model loads."""
    tasks = []
    for name in names:
        try:
            (task,) = mteb.get_tasks(tasks=[name])
        except KeyError as e:
            raise EvalError(f"unknown MTEB task {name!r}: {str(e.args[0]).removeprefix('KeyError: ')}") from None
        try:
            task.load_data()
        except Exception as e:  # datasets raises ConnectionError, OSError, DatasetNotFoundError, ... offline
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EvalError(f"MTEB task {name!r}: its data is not reachable ({first}); offline "
                            f"(HF_HUB_OFFLINE=1) runs need a local BEIR copy passed with --data_dir") from None
        tasks.append(task)
    return tasks


def limit_queries(task, n: int, seed: int = 0) -> None:
    """Keep ``n`` judged queries per split of a loaded MTEB retrieval task (hub tasks; local ones sample on read)."""
    if not isinstance(task, AbsTaskRetrieval):
        raise EvalError(f"--limits samples queries of retrieval tasks; {task.metadata.name} is {task.metadata.type}")
    task.convert_v1_dataset_format_to_v2(num_proc=None)
    for subset in task.dataset.values():
        for split in subset.values():
            queries = dict(zip(split["queries"]["id"], range(len(split["queries"]))))
            keep = sample_query_ids(split["relevant_docs"], queries, n, seed)
            split["queries"] = split["queries"].select([queries[q] for q in keep])
            split["relevant_docs"] = {q: split["relevant_docs"][q] for q in keep}


# --- the Embedder as an MTEB encoder ------------------------------------------------------------------------

class EmbedderEncoder(AbsEncoder):
    """MTEB ``EncoderProtocol`` around an l2e ``Embedder`` (its ``encode_queries`` / ``encode_corpus``).

    Queries carry the embedder's own instruction (saved with the checkpoint, or the override its constructor
    took) and both sides its token caps; ``document_instruction`` is a prompt for corpus texts (default none).
    The texts of one MTEB call go to the embedder in one call, which sorts them by length. With ``cache``,
    full embeddings are kept per text so several Matryoshka sizes cost one encoding.
    """

    def __init__(self, embedder, name: str, *, document_instruction: Optional[str] = None,
                 dim: Optional[int] = None, show_progress: bool = False, cache: bool = False):
        self.model = embedder
        self.instructions = {"query": embedder.query_instruction or None, "document": document_instruction or None}
        self.dim, self.show_progress = dim, show_progress
        self.name = name
        self._cache: Optional[Dict[Tuple[str, str], np.ndarray]] = {} if cache else None
        self.mteb_model_meta = ModelMeta.create_empty(
            {"name": f"l2e/{name}", "revision": f"dim{dim}" if dim else "full",
             "similarity_fn_name": ScoringFunction.COSINE, "embed_dim": dim, "framework": ["PyTorch"]})

    def with_dim(self, dim: Optional[int]) -> "EmbedderEncoder":
        """The same encoder (and embedding cache) scoring the first ``dim`` coordinates."""
        other = copy.copy(self)
        other.dim = dim
        other.mteb_model_meta = self.mteb_model_meta.model_copy(
            update={"revision": f"dim{dim}" if dim else "full", "embed_dim": dim})
        return other

    def _encode_full(self, texts: List[str], kind: str, batch_size: int) -> np.ndarray:
        # encode_queries / encode_corpus apply the checkpoint's inference max length (what its exports apply).
        encode = self.model.encode_queries if kind == "query" else self.model.encode_corpus
        options = {"instruction": self.instructions[kind], "batch_size": batch_size, "show_progress": self.show_progress}
        if self._cache is None:
            return np.asarray(encode(texts, **options))
        todo = list(dict.fromkeys(t for t in texts if (kind, t) not in self._cache))
        if todo:
            self._cache.update({(kind, t): e for t, e in zip(todo, np.asarray(encode(todo, **options)))})
        return np.stack([self._cache[(kind, t)] for t in texts])

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        kind = "query" if prompt_type == PromptType.query else "document"
        return truncate_normalize(self._encode_full(texts, kind, kwargs.get("batch_size", 32)), self.dim)


def check_dims(dims: Optional[Sequence[int]], width: int) -> List[int]:
    """``dims`` validated against the embedding size; ``None``/empty means the full size."""
    if not dims:
        return [width]
    bad = [d for d in dims if not 0 < d <= width]
    if bad:
        raise EvalError(f"--dims {','.join(map(str, bad))} outside 1..{width} (the embedding size)")
    return list(dims)


# --- running MTEB and summarising ----------------------------------------------------------------------------

def safe_name(label: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.=-]+", "_", label).strip("_") or "model"


@contextlib.contextmanager
def per_query_ndcg(tasks: Sequence) -> Iterator[Dict[str, Dict[str, float]]]:
    """``{task name: {query id: nDCG@10}}`` for every task MTEB evaluates inside the block.

    MTEB's ``RetrievalEvaluator`` scores each query with pytrec_eval and averages those scores into
    ``ndcg_at_10``; it keeps only the averages. What it computed per query is handed to the task's
    ``task_specific_scores`` hook first, so that hook is wrapped on each task instance for the block: the
    numbers recorded are the very ones MTEB averaged (same ranking, same tie-breaking, same cut-off). Query
    ids are prefixed ``subset/split/`` only when a task has more than one subset or split.
    """
    captured: Dict[str, Dict[Tuple[str, str], Dict[str, float]]] = {}
    out: Dict[str, Dict[str, float]] = {}
    wrapped = []
    for task in tasks:
        if not isinstance(task, AbsTaskRetrieval):
            continue
        original = task.task_specific_scores  # the bound method (MTEB's default returns {})

        def hook(scores, qrels, results, hf_split, hf_subset, _name=task.metadata.name, _original=original):
            captured.setdefault(_name, {})[(hf_subset, hf_split)] = {
                str(q): float(s["ndcg_cut_10"]) for q, s in scores.items()}
            return _original(scores, qrels, results, hf_split=hf_split, hf_subset=hf_subset)

        task.task_specific_scores = hook
        wrapped.append(task)
    try:
        yield out
    finally:
        for task in wrapped:
            del task.task_specific_scores  # back to the class's method
        for name, parts in captured.items():
            prefix = len(parts) > 1
            out[name] = {(f"{subset}/{split}/{q}" if prefix else q): v
                         for (subset, split), scores in parts.items() for q, v in scores.items()}


def summary_row(task_result, label: str, dim: int) -> dict:
    """One summary row from MTEB's ``TaskResult`` (scores averaged over its subsets and splits)."""
    row: Dict[str, Any] = {"model": label, "dim": dim, "task": task_result.task_name}
    for metric in METRICS:
        row[metric] = float(task_result.get_score(getter=lambda s, m=metric: s[m]))
    return row


@contextlib.contextmanager
def _datasets_bars(show: bool):
    """MTEB maps the corpus with ``datasets``, whose bars would otherwise print at every training validation."""
    was_disabled = datasets.are_progress_bars_disabled()
    if not show:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def run_mteb(encoder: EmbedderEncoder, tasks: list, dims: Sequence[int], *, batch_size: int = 32,
             output_folder: Optional[str] = None, show_progress: bool = False) -> List[dict]:
    """Score ``encoder`` on ``tasks`` at each Matryoshka size; MTEB's JSON per task under ``output_folder``."""
    rows = []
    for dim in dims:
        with _datasets_bars(show_progress), per_query_ndcg(tasks) as per_query:
            result = mteb.evaluate(encoder.with_dim(dim), tasks, cache=None, overwrite_strategy="always",
                                   co2_tracker=False, show_progress_bar=show_progress,
                                   encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress})
        for task_result in result.task_results:
            if output_folder:
                folder = Path(output_folder) / safe_name(encoder.name) / f"dim_{dim}"
                folder.mkdir(parents=True, exist_ok=True)
                task_result.to_disk(folder / f"{safe_name(task_result.task_name)}.json")
            rows.append(with_per_query(summary_row(task_result, encoder.name, dim), per_query))
    return rows


def with_per_query(row: dict, per_query: Dict[str, Dict[str, float]]) -> dict:
    """``row`` plus ``per_query`` ({query id: nDCG@10}) when MTEB's evaluator reported them for its task."""
    if row["task"] in per_query:
        row["per_query"] = per_query[row["task"]]
    return row


def run_search(search, tasks: list, *, output_folder: Optional[str] = None, show_progress: bool = False,
               dim: int = 0) -> List[dict]:
    """Score an ``l2e.retrieval.search.MtebSearch`` (any representation, BM25, a fusion) on ``tasks`` with MTEB."""
    rows = []
    with _datasets_bars(show_progress), per_query_ndcg(tasks) as per_query:
        result = mteb.evaluate(search, tasks, cache=None, overwrite_strategy="always", co2_tracker=False,
                               show_progress_bar=show_progress)
    for task_result in result.task_results:
        if output_folder:
            folder = Path(output_folder) / safe_name(search.name)
            folder.mkdir(parents=True, exist_ok=True)
            task_result.to_disk(folder / f"{safe_name(task_result.task_name)}.json")
        row = with_per_query(summary_row(task_result, search.name, dim), per_query)
        stats = search.stats
        row["index_bytes_per_doc"] = stats.get("index_bytes_per_doc")
        # Query encoding, scoring against the whole corpus and top-k, per query (queries batched).
        row["query_ms"] = 1000 * stats["search_s"] / max(1, stats["queries"])
        rows.append(row)
    return rows


def evaluate_retrieval(embedder, data_dir: str, *, max_queries: int = 0, dims: Optional[Sequence[int]] = None,
                       batch_size: int = 32, output_folder: Optional[str] = None,
                       document_instruction: Optional[str] = None, label: str = "model", seed: int = 0,
                       show_progress: bool = False) -> List[dict]:
    """nDCG@10, MRR@10, Recall@10/100, MAP@10 of ``embedder`` on one BEIR folder, computed by MTEB.

    For the trainer's validation and the ablation script. Returns one row per size in ``dims`` (full size
    when empty): ``{"model", "dim", "task", "ndcg_at_10", ...}``. ``max_queries`` > 0 samples that many
    queries with ``seed``.
    """
    task = make_beir_task(data_dir, max_queries=max_queries, seed=seed)
    dims = check_dims(dims, embedder.dim)
    encoder = EmbedderEncoder(embedder, label, document_instruction=document_instruction,
                              show_progress=show_progress, cache=len(dims) > 1)
    return run_mteb(encoder, [task], dims, batch_size=batch_size, output_folder=output_folder,
                    show_progress=show_progress)


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table: one row per (model, dim, task), the four headline metrics (and, for exact-search rows,
    the index bytes per document and ms per query)."""
    extra = any("query_ms" in r for r in rows)
    head = "| model | dim | task | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |"
    rule = "|---|---:|---|" + "---:|" * len(TABLE_COLUMNS)
    if extra:
        head, rule = head + " index B/doc | ms/query |", rule + "---:|---:|"
    body = []
    for r in rows:
        line = f"| {r['model']} | {r['dim'] or ''} | {r['task']} | " + " | ".join(
            f"{r[key]:.4f}" for _, key in TABLE_COLUMNS) + " |"
        if extra:
            size = f"{r['index_bytes_per_doc']:.0f}" if r.get("index_bytes_per_doc") is not None else ""
            line += f" {size} | {r['query_ms']:.1f} |" if "query_ms" in r else " | |"
        body.append(line)
    return "\n".join([head, rule, *body]) + "\n"


PER_QUERY_DIR = "per_query"


def per_query_file(row: dict) -> str:
    """Where a summary row's per-query scores go, relative to the summary: one file per model x dim x task."""
    dim = f".dim{row['dim']}" if row.get("dim") else ""
    return f"{PER_QUERY_DIR}/{safe_name(row['model'])}{dim}.{safe_name(row['task'])}.json"


def write_per_query(row: dict, output_folder: str) -> dict:
    """``row`` with its ``per_query`` scores moved to their own file beside ``summary.json`` (written
    atomically): ``{"model", "dim", "task", "metric": "ndcg_at_10", "scores": {query id: nDCG@10}}``; the row
    keeps the file's path, relative to ``output_folder``. Rows without scores are returned as they are."""
    from l2e.core.atomic import write_json

    if not isinstance(row.get("per_query"), dict):
        return row
    rel = per_query_file(row)
    record = {"model": row["model"], "dim": row["dim"], "task": row["task"], "metric": "ndcg_at_10",
              "scores": row["per_query"]}
    write_json(os.path.join(output_folder, rel), record, newline=False)
    return {**row, "per_query": rel}


def read_per_query(summary_folder: str, row: dict) -> Dict[str, float]:
    """The ``{query id: nDCG@10}`` a summary row points to (``write_per_query``)."""
    with open(os.path.join(summary_folder, row["per_query"])) as f:
        return json.load(f)["scores"]


def write_summary(rows: Sequence[dict], output_folder: str) -> str:
    """``summary.json`` (the rows) and ``summary.md`` (the table) in ``output_folder``; returns the table."""
    from l2e.core.atomic import atomic_file, write_json

    os.makedirs(output_folder, exist_ok=True)
    write_json(os.path.join(output_folder, "summary.json"), list(rows), indent=2)
    table = format_table(rows)
    with atomic_file(os.path.join(output_folder, "summary.md")) as tmp, open(tmp, "w") as f:
        f.write(table)
    return table
