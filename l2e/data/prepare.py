"""The tokenization pipeline behind ``tokenize_data.py``: raw datasets → the tokenized layout of ``l2e.data.read``.

Streams every dataset file in batches (memory bounded by a few batches, not the file), stores each distinct
passage once, splits train/valid by a stable hash of the query, tokenizes in worker processes, and writes
the whole output folder atomically (``l2e.core.atomic``): the previous output stays until the new one is
complete, and a folder that is not a ``tokenize_data.py`` output is never replaced.
"""
from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from l2e.config import MIN_SEQ_LENGTH, ConfigError, resolve_package_path
from l2e.core.atomic import begin_dir, recover, replace_dir, write_json
from l2e.core.cli import option
from l2e.data.read import (
    META_FILE, PASSAGE_SCHEMA, PASSAGES_FILE, RAW_TEXT_TASKS, ROW_SCHEMA, SPLITS, STATS_FILE, TASK_TYPES, DataError,
    RawRow, dataset_files, iter_raw_rows, raw_text_row, read_json, stable_unit, text_key,
)
from l2e.model.settings import INSTRUCTION_SEPARATOR

PERCENTILES = (50, 90, 99)
TEXT_FROM = ("", "query", "pos", "neg")  # --text_from: which field's distinct texts become raw-text rows
MARKER_FILE = ".l2e_tokenized"  # what makes a folder this pipeline's own output (and so replaceable)


@dataclass
class TokenizeOptions:
    """What ``tokenize_data.py`` takes: each field is its ``--option`` (``l2e.core.cli``), defined only here."""

    input_dir: str = option(help="folder of datasets, one *.parquet or *.jsonl file each; name = file stem "
                            "(train.* takes the folder's)", group="input, output, tokenizer")
    output_dir: str = option(help="output folder; replaced as a whole once the new output is complete")
    tokenizer: str = option("", "local tokenizer (or model) folder")
    model_path: str = option("", "local model folder to take the tokenizer from (instead of --tokenizer)")
    gguf_file: str = option("", "GGUF file inside --model_path whose tokenizer to use")
    max_seq_length: int = option(512, "cap for any sequence, in tokens (EOS included)", group="lengths and instructions")
    query_max_length: int = option(0, "cap for queries incl. instruction; 0 = max_seq_length")
    passage_max_length: int = option(0, "cap for passages and negatives; 0 = max_seq_length")
    instruction: str = option("", "query instruction for every dataset, e.g. 'Instruct: ...\\nQuery:'")
    instructions_file: str = option("", "JSON {dataset: instruction}; overrides --instruction per dataset")
    instruction_separator: str = option(
        INSTRUCTION_SEPARATOR, "queries without an instruction: the part up to and including this text is their "
        "inline instruction ('' = never split); must match the training config's instruction_separator")
    task_types: str = option("", f"JSON {{dataset: type}} or name=type,...; types: {', '.join(TASK_TYPES)}; overrides "
                             "the rows' 'type' field; default: the rows' 'type', else retrieval")
    valid_fraction: float = option(0.01, "share of queries held out for validation", group="split")
    valid_max_rows: int = option(1000, "cap on validation rows per dataset; 0 = no cap")
    seed: int = option(42, "seed of the train/valid split")
    batch_size: int = option(1000, "rows per streaming batch (memory is bounded by a few batches)", group="throughput")
    num_proc: int = option(1, "tokenizer processes")
    max_rows: int = option(0, "read at most this many input rows per dataset; 0 = all")
    text_from: str = option("", "turn query/pos rows into raw texts for an unsupervised stage (mntp, simcse): every "
                            "distinct text of this field becomes one row", choices=TEXT_FROM)
    min_negatives: int = option(0, "skip rows with fewer hard negatives (mining's false-negative filter can empty a "
                                "row; shorter rows are otherwise topped up at training time, see README)")

    @property
    def query_len(self) -> int:
        return self.query_max_length or self.max_seq_length

    @property
    def passage_len(self) -> int:
        return self.passage_max_length or self.max_seq_length


# --- options -------------------------------------------------------------------------------------------------


def check_options(o: TokenizeOptions) -> None:
    """Every problem with the options, raised once (before any file is read or written)."""
    problems: List[str] = []
    if bool(o.tokenizer) == bool(o.model_path):
        problems.append("give exactly one of --tokenizer or --model_path")
    if o.gguf_file and not o.model_path:
        problems.append("--gguf_file needs --model_path (the folder holding the .gguf file)")
    for name in ("batch_size", "num_proc"):
        if getattr(o, name) < 1:
            problems.append(f"--{name}={getattr(o, name)} must be >= 1")
    if o.max_seq_length < MIN_SEQ_LENGTH:
        problems.append(f"--max_seq_length={o.max_seq_length} leaves no room for text; use at least {MIN_SEQ_LENGTH}")
    for name in ("query_max_length", "passage_max_length"):
        value = getattr(o, name)
        if value and not MIN_SEQ_LENGTH <= value <= o.max_seq_length:
            problems.append(f"--{name}={value} must be 0 or in [{MIN_SEQ_LENGTH}, max_seq_length={o.max_seq_length}]")
    for name in ("valid_max_rows", "max_rows", "min_negatives"):
        if getattr(o, name) < 0:
            problems.append(f"--{name}={getattr(o, name)} must be >= 0")
    if o.text_from not in TEXT_FROM:
        problems.append(f"--text_from {o.text_from!r}: use query, pos or neg")
    if not 0 <= o.valid_fraction < 1:
        problems.append(f"--valid_fraction={o.valid_fraction} must be in [0, 1)")
    if not os.path.isdir(o.input_dir):
        problems.append(f"--input_dir {o.input_dir}: folder not found")
    if o.instructions_file and not os.path.isfile(o.instructions_file):
        problems.append(f"--instructions_file {o.instructions_file}: not found")
    problems += _output_problems(o.output_dir)
    if problems:
        raise DataError("; ".join(problems))


def parse_task_types(text: str) -> Dict[str, str]:
    """``--task_types``: a JSON object or ``name=type,name=type``."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"--task_types is not valid JSON ({e.msg})") from None
    else:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise DataError(f"--task_types={text!r}: expected name=type,name=type or a JSON object")
        mapping = {name.strip(): kind.strip() for name, kind in pairs}
    bad = {k: v for k, v in mapping.items() if v not in TASK_TYPES}
    if bad:
        raise DataError(f"--task_types: {bad} not allowed; types are {', '.join(TASK_TYPES)}")
    return mapping


def read_instructions(path: str) -> Dict[str, str]:
    if not path:
        return {}
    mapping = read_json(path)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise DataError(f"{path}: expected a JSON object {{dataset: instruction string}}")
    return mapping


def check_names(option: str, mapping: Dict[str, str], names: Sequence[str]) -> None:
    """A typo in a dataset name would silently drop its instruction or type; refuse it."""
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise DataError(f"{option} names unknown dataset(s) {', '.join(unknown)}; datasets: {', '.join(names)}")


def load_tokenizer(o: TokenizeOptions):
    """The tokenizer (a folder, or the one inside a GGUF file), checked to really tokenize."""
    from l2e.model.embedding_model import check_tokenizer
    from transformers import AutoTokenizer

    try:
        path = resolve_package_path(o.tokenizer or o.model_path)  # pkg:NAME/path: inside an installed package
    except ConfigError as e:
        raise DataError("; ".join(e.problems)) from None
    if not os.path.exists(path):
        raise DataError(f"tokenizer folder {path!r} not found (local folders only, nothing is downloaded)")
    kwargs = {"gguf_file": o.gguf_file} if o.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as e:  # noqa: BLE001 -- a foreign or damaged file: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"could not load a tokenizer from {path!r} ({type(e).__name__}: {first[:200]})") from None
    check_tokenizer(tokenizer, path)
    return tokenizer


def tokenizer_name(o: TokenizeOptions) -> str:
    return o.tokenizer or (os.path.join(o.model_path, o.gguf_file) if o.gguf_file else o.model_path)


# --- tokenization (runs in worker processes when num_proc > 1) -------------------------------------------------

# The pool initializer stores the tokenizer here once per worker, instead of pickling it with every batch.
_WORKER: Dict[str, Any] = {}


def init_worker(tokenizer) -> None:
    _WORKER["tokenizer"] = tokenizer


Job = Tuple[List[str], List[str], List[str], int, int]  # queries, their instructions, new passages, max lengths
Result = Tuple[List[List[int]], List[int], List[List[int]]]  # query ids, instruction lens, passage ids


def tokenize_job(job: Job) -> Result:
    """Tokenize one batch: queries grouped by instruction (encode_texts takes one), then the new passages."""
    from l2e.data.tokens import encode_texts  # here, not on top: --help and option errors answer without loading torch

    queries, instructions, passages, query_len, passage_len = job
    tokenizer = _WORKER["tokenizer"]
    query_ids: List[List[int]] = [[] for _ in queries]
    inst_lens = [0] * len(queries)
    by_instruction: Dict[str, List[int]] = {}
    for i, inst in enumerate(instructions):
        by_instruction.setdefault(inst, []).append(i)
    for inst, idx in by_instruction.items():
        try:
            ids, lens = encode_texts(tokenizer, [queries[i] for i in idx], query_len, inst or None)
        except ValueError as e:
            raise DataError(f"instruction {inst[:60]!r}: {e}") from None
        for i, seq, n in zip(idx, ids, lens):
            query_ids[i], inst_lens[i] = seq, n
    passage_ids, _ = encode_texts(tokenizer, passages, passage_len)
    return query_ids, inst_lens, passage_ids


def ordered_results(jobs: Iterator[Tuple[Any, Job]], pool, window: int) -> Iterator[Tuple[Any, Result]]:
    """``(context, tokenize_job(job))`` in input order, with at most ``window`` jobs in flight.

    Not ``pool.imap``: it drains its input eagerly, so memory would grow with the file, not the batch.
    """
    pending: deque = deque()
    for context, job in jobs:
        if pool is None:
            yield context, tokenize_job(job)
            continue
        pending.append((context, pool.apply_async(tokenize_job, (job,))))
        if len(pending) >= window:
            context, result = pending.popleft()
            yield context, result.get()
    while pending:
        context, result = pending.popleft()
        yield context, result.get()


# --- one dataset -----------------------------------------------------------------------------------------------


class Splitter:
    """Train/valid by a stable hash of the query text and seed: the same query always lands in the same split,
    whatever the file order or the number of processes. Once ``max_rows`` valid rows are taken, new queries go
    to train (so the cap itself follows file order); queries already in valid stay there."""

    def __init__(self, fraction: float, max_rows: int, seed: int):
        self.fraction, self.max_rows, self.seed = fraction, max_rows, seed
        self.valid_queries: set = set()  # bounded by the cap (or by fraction x rows without one)
        self.valid_rows = 0

    def split(self, query: str, n_rows: int) -> str:
        key = text_key(query)
        if key not in self.valid_queries:
            full = self.max_rows and self.valid_rows >= self.max_rows
            if full or stable_unit(query, self.seed) >= self.fraction:
                return "train"
            self.valid_queries.add(key)
        self.valid_rows += n_rows
        return "valid"


class Stats:
    """Counts and token-length histograms. Lengths never exceed the max length, so a histogram gives exact
    percentiles in memory bounded by max_length, not by the number of rows."""

    def __init__(self, query_len: int, passage_len: int):
        self.input_rows = 0
        self.skipped_rows = 0  # rows read but left out by --min_negatives
        self.inline_rows = 0  # queries whose instruction was found by the separator
        self.rows = {split: 0 for split in SPLITS}
        self.neg_min, self.neg_max, self.neg_sum = None, 0, 0
        self.query_hist = np.zeros(query_len + 1, dtype=np.int64)
        self.passage_hist = np.zeros(passage_len + 1, dtype=np.int64)

    def add_row(self, n_neg: int, n_out: int) -> None:
        self.input_rows += 1
        self.neg_min = n_neg if self.neg_min is None else min(self.neg_min, n_neg)
        self.neg_max = max(self.neg_max, n_neg)
        self.neg_sum += n_neg * n_out

    def keep_rows_with_negatives(self, rows: Iterator[RawRow], n: int) -> Iterator[RawRow]:
        for row in rows:
            if len(row.neg) >= n:
                yield row
            else:
                self.skipped_rows += 1

    def add_lengths(self, hist: np.ndarray, seqs: List[List[int]]) -> None:
        if seqs:
            hist += np.bincount([len(s) for s in seqs], minlength=len(hist))


def percentiles(hist: np.ndarray) -> Dict[str, int]:
    """Nearest-rank p50/p90/p99/max of the lengths counted in ``hist`` (numpy's ``inverted_cdf``)."""
    total = int(hist.sum())
    if total == 0:
        return {**{f"p{p}": 0 for p in PERCENTILES}, "max": 0}
    cum = np.cumsum(hist)
    out = {f"p{p}": int(np.searchsorted(cum, -(-p * total // 100))) for p in PERCENTILES}
    out["max"] = int(np.nonzero(hist)[0][-1])
    return out


class Planned(NamedTuple):
    """One output row before its query is tokenized."""

    row: int  # index of its input row in the batch (several positives: several Planned share it)
    split: str
    pos_id: int
    neg_ids: List[int]
    pos_score: float
    neg_scores: List[float]


def plan_batches(rows: Iterator[RawRow], ctx: Dict[str, Any]) -> Iterator[Tuple[List[Planned], Job]]:
    """Group rows into batches; give every new passage text the next id (in the main process, in file order,
    so ids do not depend on num_proc) and decide each row's split. Yields ``(plan, tokenize job)``."""
    seen: Dict[bytes, int] = ctx["passage_ids"]  # grows with the number of distinct passages (16 B key + id each)
    batch: List[RawRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == ctx["batch_size"]:
            yield _plan(batch, seen, ctx)
            batch = []
    if batch:
        yield _plan(batch, seen, ctx)


def _plan(batch: List[RawRow], seen: Dict[bytes, int], ctx: Dict[str, Any]) -> Tuple[List[Planned], Job]:
    new_texts: List[str] = []

    def pid(text: str) -> int:
        key = text_key(text)
        if key not in seen:
            seen[key] = len(seen)
            new_texts.append(text)
        return seen[key]

    plan: List[Planned] = []
    queries, instructions = [], []
    for j, row in enumerate(batch):
        _check_type(row, ctx)
        _check_teacher(row, ctx)
        first = ctx.setdefault("raw_text", (row.raw_text, row.where))
        if first[0] != row.raw_text:
            raise DataError(f"{row.where}: raw text rows and query/pos rows in one dataset ({first[1]} is "
                            f"{'raw text' if first[0] else 'a query/pos row'}); put them in two files")
        pos_ids = [pid(t) for t in row.pos]
        neg_ids = [pid(t) for t in row.neg]
        split = ctx["splitter"].split(row.query, len(row.pos))
        for k, pos_id in enumerate(pos_ids):
            score = row.pos_scores[k] if row.pos_scores else float("nan")
            plan.append(Planned(j, split, pos_id, neg_ids, score, row.neg_scores or []))
        ctx["stats"].add_row(len(row.neg), len(row.pos))
        instruction, query = _instruction_of(row, ctx)
        instructions.append(instruction)
        queries.append(query)
    return plan, (queries, instructions, new_texts, ctx["query_len"], ctx["passage_len"])


def _instruction_of(row: RawRow, ctx: Dict[str, Any]) -> Tuple[str, str]:
    """``(instruction, query text)``: the row's prompt, else the dataset's instruction, else the part of the
    query up to ``instruction_separator`` when the query carries its instruction inline (F2LLM's data)."""
    from l2e.data.tokens import split_inline_instruction

    if row.raw_text:
        return "", row.query
    instruction = ctx["instruction"] if row.prompt is None else row.prompt
    if instruction or not ctx["instruction_separator"]:
        return instruction, row.query
    inline, text = split_inline_instruction(row.query, ctx["instruction_separator"])
    if inline:
        if not text.strip():
            raise DataError(f"{row.where}: the query is all instruction: nothing follows "
                            f"{ctx['instruction_separator']!r} (--instruction_separator)")
        ctx["stats"].inline_rows += 1
    return inline, text


def texts_of(rows: Iterator[RawRow], field: str) -> Iterator[RawRow]:
    """Raw-text rows from one field of query/pos rows (``--text_from``): each distinct text once."""
    seen: set = set()  # 16-byte keys: bounded by the distinct texts, like the passage ids
    for row in rows:
        for text in ([row.query] if field == "query" else getattr(row, field)):
            key = text_key(text)
            if key not in seen:
                seen.add(key)
                yield raw_text_row(text, row.where)


def _check_type(row: RawRow, ctx: Dict[str, Any]) -> None:
    if row.task_type is None:
        return
    first = ctx.setdefault("row_type", (row.task_type, row.where))
    if first[0] != row.task_type:
        raise DataError(
            f"{row.where}: type {row.task_type!r} differs from {first[0]!r} at {first[1]}; "
            "a dataset has one task type (split the file, or set it with --task_types)"
        )


def _check_teacher(row: RawRow, ctx: Dict[str, Any]) -> None:
    """Teacher scores on every row of a dataset or on none: a batch must either have a kd term on every rank
    or on none, and a missing score must never become a NaN in the loss."""
    has = row.pos_scores is not None
    first = ctx.setdefault("teacher", (has, row.where))
    if first[0] != has:
        with_, without = (first[1], row.where) if first[0] else (row.where, first[1])
        raise DataError(f"{row.where}: teacher scores (pos_scores / neg_scores) on some rows only ({with_} has "
                        f"them, {without} not); give them on every row of the dataset or on none")


def write_batch(plan: List[Planned], result: Result, writers: Dict[str, pq.ParquetWriter], stats: Stats) -> None:
    query_ids, inst_lens, passage_ids = result
    writers["passages"].write_table(pa.table({"input_ids": passage_ids}, schema=PASSAGE_SCHEMA))
    stats.add_lengths(stats.passage_hist, passage_ids)
    for split in SPLITS:
        mine = [p for p in plan if p.split == split]
        if not mine:
            continue
        columns = {
            "query_ids": [query_ids[p.row] for p in mine],
            "instruction_len": [inst_lens[p.row] for p in mine],
            "pos_id": [p.pos_id for p in mine],
            "neg_ids": [p.neg_ids for p in mine],
            "pos_score": [p.pos_score for p in mine],
            "neg_scores": [p.neg_scores for p in mine],
        }
        writers[split].write_table(pa.table(columns, schema=ROW_SCHEMA))
        stats.rows[split] += len(mine)
        stats.add_lengths(stats.query_hist, columns["query_ids"])


def tokenize_dataset(name: str, path: str, fmt: str, out: str, opts: Dict[str, Any], pool) -> Dict[str, Any]:
    """Stream one dataset file into ``out/name/``; returns its meta (also written to meta.json)."""
    folder = os.path.join(out, name)
    os.makedirs(folder)
    stats = Stats(opts["query_len"], opts["passage_len"])
    ctx = {**opts, "instruction": opts["instructions"].get(name, opts["instruction"]), "stats": stats,
           "splitter": Splitter(opts["valid_fraction"], opts["valid_max_rows"], opts["seed"]), "passage_ids": {}}
    rows = iter_raw_rows(path, fmt, opts["batch_size"])
    if opts["text_from"]:
        rows = texts_of(rows, opts["text_from"])
    if opts["max_rows"]:
        rows = itertools.islice(rows, opts["max_rows"])
    if opts["min_negatives"]:
        rows = stats.keep_rows_with_negatives(rows, opts["min_negatives"])
    writers = {"passages": pq.ParquetWriter(os.path.join(folder, PASSAGES_FILE), PASSAGE_SCHEMA)}
    writers.update({s: pq.ParquetWriter(os.path.join(folder, f"{s}.parquet"), ROW_SCHEMA) for s in SPLITS})
    try:
        with tqdm(desc=name, unit="rows", disable=None) as bar:
            for plan, result in ordered_results(plan_batches(rows, ctx), pool, 2 * opts["num_proc"]):
                write_batch(plan, result, writers, stats)
                bar.update(len(plan))
    finally:
        for w in writers.values():
            w.close()
    if stats.input_rows == 0:
        why = f" with >= {opts['min_negatives']} negatives (--min_negatives)" if stats.skipped_rows else ""
        raise DataError(f"{path}: no rows{why}")
    meta = dataset_meta(name, path, fmt, ctx, stats)
    write_json(os.path.join(folder, META_FILE), meta, indent=2)
    return meta


def dataset_meta(name: str, path: str, fmt: str, ctx: Dict[str, Any], stats: Stats) -> Dict[str, Any]:
    raw = ctx.get("raw_text", (False,))[0]
    task_type = ctx["task_types"].get(name, ctx.get("row_type", (None,))[0] or "retrieval")
    if raw and task_type not in RAW_TEXT_TASKS:
        raise DataError(f"{path}: raw text rows train an unsupervised stage; say which with --task_types "
                        f"{name}=mntp or {name}=simcse")
    if not raw and task_type in RAW_TEXT_TASKS:
        raise DataError(f"{path}: task type {task_type} trains on raw text ({{\"text\": ...}} rows or --text_from), "
                        "but the rows are query/pos pairs")
    rows = stats.rows["train"] + stats.rows["valid"]
    return {
        "name": name,
        "task_type": task_type,
        "instruction": ctx["instruction"],
        "instruction_separator": ctx["instruction_separator"],
        "inline_instruction_rows": stats.inline_rows,
        "source": path,
        "format": fmt,
        "tokenizer": ctx["tokenizer"],
        "tokenizer_fingerprint": ctx["tokenizer_fingerprint"],
        "max_seq_length": ctx["max_seq_length"],
        "query_max_length": ctx["query_len"],
        "passage_max_length": ctx["passage_len"],
        "eos_token_id": ctx["eos_token_id"],
        "teacher_scores": ctx.get("teacher", (False,))[0],
        "input_rows": stats.input_rows,
        "skipped_rows": stats.skipped_rows,
        "rows": rows,
        "train_rows": stats.rows["train"],
        "valid_rows": stats.rows["valid"],
        "passages": len(ctx["passage_ids"]),
        "num_negatives": stats.neg_min,
        "max_negatives": stats.neg_max,
        "mean_negatives": round(stats.neg_sum / rows, 3),
        "query_tokens": percentiles(stats.query_hist),
        "passage_tokens": percentiles(stats.passage_hist),
    }


# --- the whole folder ------------------------------------------------------------------------------------------


def is_own_output(folder: str) -> bool:
    """A folder this pipeline wrote: its marker file, or (outputs of older versions) ``data_stats.json`` and
    nothing but dataset folders with ``meta.json``. Only such a folder is ever replaced."""
    if os.path.isfile(os.path.join(folder, MARKER_FILE)):
        return True
    entries = os.listdir(folder)
    if STATS_FILE not in entries:
        return False
    return all(e == STATS_FILE or os.path.isfile(os.path.join(folder, e, META_FILE)) for e in entries)


def _output_problems(output_dir: str) -> List[str]:
    recover(output_dir)
    if os.path.isfile(output_dir):
        return [f"--output_dir {output_dir}: is a file"]
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not is_own_output(output_dir):
        return [f"--output_dir {output_dir}: exists and is not a tokenize_data.py output (no {MARKER_FILE}); "
                "refusing to replace it, choose a new or empty folder"]
    return []


def data_stats(metas: List[Dict[str, Any]], o: TokenizeOptions) -> Dict[str, Any]:
    keys = ("task_type", "input_rows", "skipped_rows", "rows", "train_rows", "valid_rows", "passages",
            "num_negatives", "max_negatives", "mean_negatives", "query_tokens", "passage_tokens")
    return {
        "tokenizer": metas[0]["tokenizer"],
        "max_seq_length": o.max_seq_length,
        "query_max_length": metas[0]["query_max_length"],
        "passage_max_length": metas[0]["passage_max_length"],
        "valid_fraction": o.valid_fraction,
        "valid_max_rows": o.valid_max_rows,
        "seed": o.seed,
        "datasets": {m["name"]: {k: m[k] for k in keys} for m in metas},
        "totals": {k: sum(m[k] for m in metas) for k in ("input_rows", "rows", "train_rows", "valid_rows", "passages")}
        | {"datasets": len(metas)},
    }


def run(o: TokenizeOptions) -> Dict[str, Any]:
    """The whole pipeline: check, read, tokenize, write atomically; returns ``data_stats.json``'s content."""
    from l2e.data.tokens import tokenizer_fingerprint

    check_options(o)
    datasets = dataset_files(o.input_dir)
    names = [name for name, _, _ in datasets]
    task_types, instructions = parse_task_types(o.task_types), read_instructions(o.instructions_file)
    check_names("--task_types", task_types, names)
    check_names("--instructions_file", instructions, names)
    tokenizer = load_tokenizer(o)
    tmp = begin_dir(o.output_dir)
    try:
        opts = {**asdict(o), "task_types": task_types, "instructions": instructions,
                "tokenizer": tokenizer_name(o), "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
                "eos_token_id": tokenizer.eos_token_id, "query_len": o.query_len, "passage_len": o.passage_len}
        metas = tokenize_all(datasets, tmp, opts, tokenizer)
        stats = data_stats(metas, o)
        write_json(os.path.join(tmp, STATS_FILE), stats, indent=2)
        with open(os.path.join(tmp, MARKER_FILE), "w") as f:
            f.write("written by tokenize_data.py; this folder is replaced as a whole when it is run again\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, o.output_dir)
    return stats


def tokenize_all(datasets, out: str, opts: Dict[str, Any], tokenizer) -> List[Dict[str, Any]]:
    if opts["num_proc"] == 1:
        init_worker(tokenizer)
        return [tokenize_dataset(name, path, fmt, out, opts, None) for name, path, fmt in datasets]
    # Processes do the work; the fast tokenizer's own threads would only compete with them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with multiprocessing.Pool(opts["num_proc"], initializer=init_worker, initargs=(tokenizer,)) as pool:
        return [tokenize_dataset(name, path, fmt, out, opts, pool) for name, path, fmt in datasets]

