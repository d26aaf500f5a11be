"""Training data on disk: raw dataset readers, the tokenized format the trainer reads, and BEIR folders.

Raw datasets (input of ``tokenize_data.py``): one file per dataset in a folder, dataset name = file stem
(``train.jsonl`` / ``train.parquet`` take the folder's name, see :func:`dataset_files`).

- F2LLM-style parquet: columns ``query``, ``passage``, ``negative_1`` … ``negative_N`` (any N >= 0), optional
  ``prompt`` (this row's query instruction).
- FlagEmbedding / EmbedRAG-style JSONL, one object a line: ``{"query": str, "pos": [str, ...], "neg": [str, ...]}``
  (``neg`` may be left out) with optional ``prompt`` (this row's query instruction), ``type``
  (retrieval | clustering | classification), ``pos_scores`` / ``neg_scores`` (teacher scores, one per
  ``pos`` / ``neg`` entry, for distillation).
- Raw text for the unsupervised stages (task type ``mntp`` or ``simcse``): JSONL ``{"text": str}`` rows (or
  ``tokenize_data.py --text_from pos`` on query/pos rows); each text is its own query and positive, without
  instruction.

Tokenized layout (written by ``tokenize_data.py``, read by :func:`load_tokenized`)::

    {root}/{dataset}/passages.parquet  input_ids: list<int32>    row i is passage id i; every distinct passage
                                                                 or negative text is stored once, however many
                                                                 rows repeat it (negatives are shared a lot)
    {root}/{dataset}/train.parquet     query_ids: list<int32>    instruction + query, EOS last (decoders)
    {root}/{dataset}/valid.parquet     instruction_len: int32    leading instruction tokens of query_ids (0: none)
                                       pos_id: int64             row of passages.parquet
                                       neg_ids: list<int64>      rows of passages.parquet (hard negatives)
                                       pos_score: float32        teacher score of the positive, NaN if absent
                                       neg_scores: list<float32> teacher scores of neg_ids, empty if absent
    {root}/{dataset}/meta.json         name, task_type, instruction, source, format, tokenizer, max_seq_length,
                                       query_max_length, passage_max_length, eos_token_id, rows, train_rows,
                                       valid_rows, passages, num_negatives (fewest negatives of any row),
                                       max_negatives
    {root}/data_stats.json             per dataset: rows, train/valid rows, negatives per row, task type,
                                       token-length percentiles of queries and passages; totals

A raw row with several positives becomes one tokenized row per positive (FlagEmbedding samples one per
step; expanding is deterministic). Train and valid rows share the dataset's ``passages.parquet``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from l2e.core.errors import L2EError

TASK_TYPES = ("retrieval", "clustering", "classification", "mntp", "simcse")
RAW_TEXT_TASKS = ("mntp", "simcse")  # unsupervised stages on raw text (LLM2Vec)
SPLITS = ("train", "valid")
FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}
PASSAGES_FILE = "passages.parquet"
META_FILE = "meta.json"
STATS_FILE = "data_stats.json"

PASSAGE_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32()))])
ROW_SCHEMA = pa.schema(
    [
        ("query_ids", pa.list_(pa.int32())),
        ("instruction_len", pa.int32()),
        ("pos_id", pa.int64()),
        ("neg_ids", pa.list_(pa.int64())),
        ("pos_score", pa.float32()),
        ("neg_scores", pa.list_(pa.float32())),
    ]
)


class DataError(L2EError, ValueError):
    """Bad input data or a bad tokenized folder; the message names the file (and line or row)."""


# --- raw datasets ---------------------------------------------------------------------------------------


@dataclass
class RawRow:
    """One validated input row, whatever its file format."""

    where: str  # "file:line" (JSONL) or "file row n" (parquet), for error messages
    query: str
    pos: List[str]
    neg: List[str]
    prompt: Optional[str] = None  # this row's query instruction; None = the dataset's
    task_type: Optional[str] = None
    pos_scores: Optional[List[float]] = None
    neg_scores: Optional[List[float]] = None
    raw_text: bool = False  # a {"text": ...} row (unsupervised stages)


def dataset_files(input_dir: str) -> List[Tuple[str, str, str]]:
    """``(name, path, format)`` of every ``*.jsonl`` / ``*.parquet`` file in ``input_dir``, sorted by file.

    The name is the file stem, except that ``train.jsonl`` / ``train.parquet`` (the FlagEmbedding and
    Hugging Face convention for a folder holding one dataset) takes the folder's name: ``debian/train.jsonl``
    is the dataset ``debian``.
    """
    if not os.path.isdir(input_dir):
        raise DataError(f"{input_dir}: input folder not found")
    found: Dict[str, Tuple[str, str, str]] = {}
    for entry in sorted(os.listdir(input_dir)):
        stem, ext = os.path.splitext(entry)
        if stem == "train":
            stem = os.path.basename(os.path.abspath(input_dir))
        path = os.path.join(input_dir, entry)
        if ext not in FORMATS or not os.path.isfile(path):
            continue
        if stem in found:
            raise DataError(f"{input_dir}: two datasets named {stem!r} ({found[stem][1]} and {path}); rename one")
        found[stem] = (stem, path, FORMATS[ext])
    if not found:
        raise DataError(f"{input_dir}: no *.jsonl or *.parquet datasets found")
    return list(found.values())


def iter_raw_rows(path: str, fmt: str, batch_size: int = 1000) -> Iterator[RawRow]:
    """Validated rows of one dataset file, streamed (JSONL line by line, parquet by record batches)."""
    return _iter_jsonl(path) if fmt == "jsonl" else _iter_parquet(path, batch_size)


def iter_json_lines(path: str) -> Iterator[Tuple[str, Any]]:
    """``(where, object)`` per non-blank line, ``where`` = ``path:line``; malformed JSON or text that is not
    UTF-8 names both."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                "convert the file to UTF-8") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None


def _iter_jsonl(path: str) -> Iterator[RawRow]:
    for where, obj in iter_json_lines(path):
        yield _jsonl_row(obj, where)


def _jsonl_row(obj: Any, where: str) -> RawRow:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "text" in obj and "query" not in obj:
        return raw_text_row(obj["text"], where, obj.get("type"))
    for key in ("query", "pos"):
        if key not in obj:
            raise DataError(f"{where}: missing key {key!r} (keys: {', '.join(sorted(obj)) or 'none'})")
    pos = _text_list(obj["pos"], where, "pos")
    if not pos:
        raise DataError(f"{where}: 'pos' is empty; every row needs at least one positive")
    neg = _text_list(obj.get("neg", []), where, "neg")
    if obj.get("neg_scores") is not None and obj.get("pos_scores") is None:
        raise DataError(f"{where}: 'neg_scores' without 'pos_scores'; distillation needs the teacher's score of "
                        "the positive too (give both, or neither)")
    if obj.get("pos_scores") is not None and neg and obj.get("neg_scores") is None:
        raise DataError(f"{where}: 'pos_scores' without 'neg_scores' for its {len(neg)} negatives (give both, or "
                        "neither)")
    task_type = obj.get("type")
    if task_type is not None and task_type not in TASK_TYPES:
        raise DataError(f"{where}: type={task_type!r} is not one of {', '.join(TASK_TYPES)}")
    return RawRow(
        where=where,
        query=_text(obj["query"], where, "query"),
        pos=pos,
        neg=neg,
        prompt=_prompt(obj.get("prompt"), where),
        task_type=task_type,
        pos_scores=_scores(obj.get("pos_scores"), len(pos), where, "pos_scores", "pos"),
        neg_scores=_scores(obj.get("neg_scores"), len(neg), where, "neg_scores", "neg"),
    )


def raw_text_row(text: Any, where: str, task_type: Optional[str] = None) -> RawRow:
    """A raw text for an unsupervised stage: the text is both the query and its positive (SimCSE encodes it
    twice, dropout the only noise; MNTP reads the query side). No instruction (``prompt=""``)."""
    text = _text(text, where, "text")
    if task_type is not None and task_type not in RAW_TEXT_TASKS:
        raise DataError(f"{where}: a raw text row ({{\"text\": ...}}) has type={task_type!r}; raw text trains "
                        f"{' or '.join(RAW_TEXT_TASKS)}")
    return RawRow(where=where, query=text, pos=[text], neg=[], prompt="", task_type=task_type, raw_text=True)


def _iter_parquet(path: str, batch_size: int) -> Iterator[RawRow]:
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    for column in ("query", "passage"):
        if column not in names:
            raise DataError(f"{path}: missing column {column!r} (columns: {', '.join(names)})")
    negatives = sorted((c for c in names if _negative_index(c) is not None), key=_negative_index)
    columns = ["query", "passage"] + negatives + (["prompt"] if "prompt" in names else [])
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            for rec in batch.to_pylist():
                n += 1
                yield _parquet_row(rec, f"{path} row {n}", negatives)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: corrupt parquet file near row {n + 1} ({e})") from None


def _negative_index(column: str) -> Optional[int]:
    head, _, tail = column.partition("_")
    return int(tail) if head == "negative" and tail.isdigit() else None


def _parquet_row(rec: Dict[str, Any], where: str, negatives: List[str]) -> RawRow:
    return RawRow(
        where=where,
        query=_text(rec["query"], where, "query"),
        pos=[_text(rec["passage"], where, "passage")],
        neg=[_text(rec[c], where, c) for c in negatives],
        prompt=_prompt(rec.get("prompt"), where),
    )


def _text(value: Any, where: str, label: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {label} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: empty {label} text")
    return value


def _text_list(value: Any, where: str, key: str) -> List[str]:
    if not isinstance(value, list):
        raise DataError(f"{where}: {key!r} must be a list of strings, got {type(value).__name__}")
    return [_text(v, where, f"{key}[{i}]") for i, v in enumerate(value)]


def _prompt(value: Any, where: str) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: prompt must be a string, got {type(value).__name__}")
    return value


def _scores(value: Any, n: int, where: str, key: str, of: str) -> Optional[List[float]]:
    if value is None:
        return None
    ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise DataError(f"{where}: {key!r} must be a list of numbers")
    if not all(math.isfinite(v) for v in value):
        raise DataError(f"{where}: {key!r} holds NaN or infinity; teacher scores must be finite numbers")
    if len(value) != n:
        raise DataError(f"{where}: {key!r} has {len(value)} scores but {of!r} has {n} texts; give one score each")
    return [float(v) for v in value]


def text_key(text: str) -> bytes:
    """Dedup key of a passage: 16 bytes instead of the text, so the dedup map stays small."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def stable_unit(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``(text, seed)`` alone: same on every run, process and file order
    (Python's ``hash`` is salted per process, so it cannot decide the split)."""
    digest = hashlib.blake2b(f"{seed}\0{text}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# --- tokenized datasets ---------------------------------------------------------------------------------
#
# Why memory-mapped: F2LLM's data is 5.9 M rows with 24 negatives each. As Python lists that is tens of GB per
# process before the model starts (every int an object). Parquet pages are compressed, so they cannot be mapped;
# each split is therefore converted once, streamed batch by batch, into an uncompressed Arrow IPC file next to
# it (``.arrow/``), and every process maps that file: resident memory at start-up does not grow with the rows,
# and processes share the pages.

ARROW_DIR = ".arrow"


class ListColumn:
    """A ``list<int|float>`` Arrow column read row by row: ``col[i]`` is a Python list, nothing is copied up front.

    ``lengths()`` gives every row's length from the offsets alone (no value is touched).
    """

    def __init__(self, chunked: pa.ChunkedArray):
        chunks = [c for c in chunked.chunks if len(c)]
        self._starts = np.cumsum([0] + [len(c) for c in chunks])
        self._parts = [(c.offsets.to_numpy(), c.values.to_numpy(zero_copy_only=False)) for c in chunks]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> list:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        offsets, values = self._parts[k]
        j = i - int(self._starts[k])
        return values[offsets[j]:offsets[j + 1]].tolist()

    def __iter__(self) -> Iterator[list]:
        return (self[i] for i in range(len(self)))

    def lengths(self) -> np.ndarray:
        if not self._parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(offsets) for offsets, _ in self._parts]).astype(np.int64)


def document_frequency(datasets: List["TokenizedDataset"], vocab_size: int) -> Tuple[np.ndarray, int]:
    """``(df, n)``: in how many passages each token id occurs (int64, ``vocab_size`` long) and the number of
    passages, over the passages of ``datasets`` (a dataset's passages are stored once, shared by its splits)."""
    df = np.zeros(vocab_size, dtype=np.int64)
    n = 0
    for ds in datasets:
        for offsets, values in ds.passages._parts:
            rows = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
            pairs = np.unique(rows * vocab_size + values.astype(np.int64))  # (passage, token) once each
            df += np.bincount(pairs % vocab_size, minlength=vocab_size)[:vocab_size]
            n += len(offsets) - 1
    return df, n


def row_lengths(column) -> np.ndarray:
    """Per-row lengths of a ``ListColumn`` (from its offsets) or of any sequence of sequences."""
    if hasattr(column, "lengths"):
        return column.lengths()
    return np.fromiter((len(x) for x in column), dtype=np.int64, count=len(column))


@dataclass
class TokenizedDataset:
    """One dataset split (ids index ``passages``); see the module docstring for the layout.

    List columns are memory-mapped :class:`ListColumn` s; per-row scalars are numpy arrays.
    """

    name: str
    task_type: str
    instruction: str
    passages: ListColumn
    query_ids: ListColumn
    instruction_len: np.ndarray
    pos_id: np.ndarray
    neg_ids: ListColumn
    pos_score: np.ndarray
    neg_scores: ListColumn
    meta: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.query_ids)


def load_tokenized(root: str, split: str = "train") -> List[TokenizedDataset]:
    """Every dataset under ``root`` (a ``tokenize_data.py`` output folder), sorted by name.

    Datasets whose ``split`` has no rows are returned too (length 0); the caller decides to skip them.
    """
    if split not in SPLITS:
        raise DataError(f"split={split!r} is not one of {', '.join(SPLITS)}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: tokenized data folder not found; run tokenize_data.py first")
    names = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if not names:
        raise DataError(f"{root}: no dataset folders; run tokenize_data.py to create them")
    return [_load_dataset(os.path.join(root, name), split) for name in names]


def _load_dataset(folder: str, split: str) -> TokenizedDataset:
    meta = _read_meta(os.path.join(folder, META_FILE))
    passages, _ = mapped_table(os.path.join(folder, PASSAGES_FILE), PASSAGE_SCHEMA)
    rows_path = os.path.join(folder, f"{split}.parquet")
    rows, id_range = mapped_table(rows_path, ROW_SCHEMA)
    if id_range and (id_range[0] < 0 or id_range[1] >= passages.num_rows):
        # A row pointing past passages.parquet would crash the trainer mid-epoch; fail at load instead.
        bad = id_range[1] if id_range[1] >= passages.num_rows else id_range[0]
        raise DataError(f"{rows_path}: passage id {bad} out of range ({PASSAGES_FILE} has {passages.num_rows} rows)")
    scalar = lambda name: rows.column(name).to_numpy()  # noqa: E731  (a copy of 4-8 bytes per row)
    return TokenizedDataset(
        name=meta["name"],
        task_type=meta["task_type"],
        instruction=meta["instruction"],
        passages=ListColumn(passages.column("input_ids")),
        query_ids=ListColumn(rows.column("query_ids")),
        instruction_len=scalar("instruction_len"),
        pos_id=scalar("pos_id"),
        neg_ids=ListColumn(rows.column("neg_ids")),
        pos_score=scalar("pos_score"),
        neg_scores=ListColumn(rows.column("neg_scores")),
        meta=meta,
    )


def mapped_table(path: str, schema: pa.Schema):
    """``(table, (min id, max id) or None)``: ``path`` (parquet) as a memory-mapped Arrow table.

    The Arrow copy lives in ``.arrow/`` beside the parquet file with a small JSON record of the parquet file it
    was made from (size, modification time) and of the id range of ``pos_id`` / ``neg_ids`` seen while
    converting, so checking the range later touches no row. A changed parquet file is converted again.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing; the folder is not a complete tokenize_data.py output")
    st = os.stat(path)
    source = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = _arrow_path(path)
    record = _cache_record(cache)
    if record is None or record.get("source") != source:
        record = _convert(path, schema, cache, source)
    try:
        table = pa.ipc.open_file(pa.memory_map(cache)).read_all()
    except (pa.ArrowException, OSError):
        record = _convert(path, schema, cache, source)  # a damaged copy is rebuilt
        table = pa.ipc.open_file(pa.memory_map(cache)).read_all()
    return table, record.get("id_range")


def _arrow_path(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    cache_dir = os.path.join(folder, ARROW_DIR)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        if os.access(cache_dir, os.W_OK):
            return os.path.join(cache_dir, name + ".arrow")
    except OSError:
        pass
    # A read-only data folder (a shared dataset): keep the copy in the temp folder, keyed by the path.
    import tempfile

    key = hashlib.blake2b(os.path.abspath(path).encode(), digest_size=8).hexdigest()
    cache_dir = os.path.join(tempfile.gettempdir(), "l2e_arrow_cache", key)
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, name + ".arrow")


def _cache_record(cache: str) -> Optional[dict]:
    try:
        with open(cache + ".json") as f:
            record = json.load(f)
        return record if os.path.isfile(cache) else None
    except (OSError, json.JSONDecodeError):
        return None


def _convert(path: str, schema: pa.Schema, cache: str, source: dict) -> dict:
    """Stream the parquet file into an uncompressed Arrow IPC file (memory bounded by one batch)."""
    from l2e.core.atomic import atomic_file, write_json

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: corrupt parquet file ({e})") from None
    missing = [name for name in schema.names if name not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; re-run tokenize_data.py")
    lo = hi = None
    with atomic_file(cache) as tmp, pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        try:
            for batch in pf.iter_batches(batch_size=65536, columns=schema.names):
                batch = pa.RecordBatch.from_arrays([batch.column(n).cast(schema.field(n).type) for n in schema.names],
                                                   schema=schema)
                writer.write_batch(batch)
                if "pos_id" in schema.names and batch.num_rows:
                    ids = pa.chunked_array([batch.column("pos_id"), pc.list_flatten(batch.column("neg_ids"))], pa.int64())
                    b_lo, b_hi = (v.as_py() for v in pc.min_max(ids).values())
                    lo, hi = (b_lo, b_hi) if lo is None else (min(lo, b_lo), max(hi, b_hi))
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: corrupt parquet file ({e})") from None
    record = {"source": source, "id_range": None if lo is None else [lo, hi]}
    write_json(cache + ".json", record, newline=False)
    return record


def read_json(path: str) -> Any:
    """A whole JSON file; invalid JSON names the file and line."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _read_meta(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing; the folder is not a complete tokenize_data.py output")
    meta = read_json(path)
    missing = [k for k in ("name", "task_type", "instruction") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    return meta


# --- BEIR folders (evaluation and hard-negative mining) -------------------------------------------------


def read_beir(folder: str, split: str = "test") -> Tuple[Dict[str, str], Dict[str, str], Dict[str, Dict[str, int]]]:
    """``(corpus, queries, qrels)`` of a BEIR folder: ``corpus.jsonl`` and ``queries.jsonl`` (``_id``, ``text``,
    optional ``title``, joined before the text as BEIR does) and ``qrels.tsv`` or ``qrels/{split}.tsv``
    (``query-id<TAB>corpus-id<TAB>score``, header optional). ``qrels[qid][docid] = score``.
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: BEIR folder not found")
    corpus = _read_beir_texts(_beir_file(folder, "corpus.jsonl"))
    queries = _read_beir_texts(_beir_file(folder, "queries.jsonl"))
    qrels_path = os.path.join(folder, "qrels.tsv")
    if not os.path.isfile(qrels_path):
        qrels_path = _beir_file(folder, os.path.join("qrels", f"{split}.tsv"), also="qrels.tsv")
    return corpus, queries, _read_qrels(qrels_path)


def _beir_file(folder: str, name: str, also: str = "") -> str:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        alt = f" (or {also})" if also else ""
        raise DataError(
            f"{path}: missing{alt}; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels.tsv or qrels/test.tsv"
        )
    return path


def _read_beir_texts(path: str) -> Dict[str, str]:
    texts: Dict[str, str] = {}
    first: Dict[str, str] = {}
    for where, obj in iter_json_lines(path):
        if not isinstance(obj, dict) or "_id" not in obj or not isinstance(obj.get("text"), str):
            raise DataError(f'{where}: expected {{"_id": ..., "text": "..."}}')
        key = str(obj["_id"])
        if key in texts:  # the later line would silently replace the earlier one's text
            raise DataError(f"{where}: _id {key!r} is used twice (first at {first[key]}); ids must be unique")
        texts[key], first[key] = titled_text(obj), where
    return texts


def titled_text(obj: Dict[str, Any]) -> str:
    """BEIR's ``title`` joined before ``text`` (when there is one)."""
    title = obj.get("title") or ""
    return f"{title} {obj['text']}".strip() if title else obj["text"]


def _read_qrels(path: str) -> Dict[str, Dict[str, int]]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); convert the file to UTF-8") from None
    qrels: Dict[str, Dict[str, int]] = {}
    for lineno, line in enumerate(lines, start=1):
        parts = line.split("\t")
        if not line.strip() or (lineno == 1 and parts[0] == "query-id"):
            continue
        if len(parts) != 3 or not parts[2].strip().lstrip("-").isdigit():
            raise DataError(f"{path}:{lineno}: expected query-id<TAB>corpus-id<TAB>integer score, got {line!r}")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels
