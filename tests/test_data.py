"""l2e/data/read.py: the tokenized-data reader, raw dataset discovery, the split hash and BEIR folders."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers_data import EOS, ROOT, make_inputs, read_passages, read_rows, run_tokenize, write_jsonl

from l2e.data.read import DataError, dataset_files, load_tokenized, read_beir, stable_unit

DEV_MINI = ROOT / "data" / "sample" / "dev-mini"


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    return run_tokenize(make_inputs(tmp_path_factory.mktemp("raw") / "in", debian_lines=60),
                        tmp_path_factory.mktemp("tok") / "out")


@pytest.fixture
def copy(tokenized, tmp_path):
    """A throwaway copy of the tokenized folder, to break."""
    return shutil.copytree(tokenized, tmp_path / "out")


# --- load_tokenized ---------------------------------------------------------------------------------------


def test_load_tokenized_reads_back_what_was_written(tokenized):
    datasets = load_tokenized(str(tokenized))
    assert [d.name for d in datasets] == ["debian", "pairs", "scored"]
    assert [d.task_type for d in datasets] == ["retrieval", "classification", "clustering"]
    for d in datasets:
        rows = read_rows(tokenized / d.name, "train")
        assert len(d) == len(rows) == d.meta["train_rows"]
        assert list(d.passages) == read_passages(tokenized / d.name)
        assert list(d.query_ids) == [r["query_ids"] for r in rows]
        assert d.instruction_len.tolist() == [r["instruction_len"] for r in rows]
        assert (d.pos_id.tolist(), list(d.neg_ids)) == ([r["pos_id"] for r in rows], [r["neg_ids"] for r in rows])
        assert all(q[-1] == EOS for q in d.query_ids)
        assert d.query_ids.lengths().tolist() == [len(r["query_ids"]) for r in rows]
    debian = datasets[0]
    assert debian.instruction.startswith("Instruct: ") and all(n > 0 for n in debian.instruction_len)
    assert all(math.isnan(s) for s in debian.pos_score) and all(s == [] for s in debian.neg_scores)


def test_tokenized_splits_are_memory_mapped_arrow_copies(copy):
    """Each parquet file is converted once into .arrow/ (memory-mapped by every process) and converted again
    when the parquet file changes; the copy is what the dataset's columns point into."""
    first = load_tokenized(str(copy))[1]
    cache = copy / "pairs" / ".arrow" / "train.parquet.arrow"
    assert cache.exists() and json.loads((copy / "pairs" / ".arrow" / "train.parquet.arrow.json").read_text())[
        "id_range"] == [0, 3]
    stamp = cache.stat().st_mtime_ns
    load_tokenized(str(copy))
    assert cache.stat().st_mtime_ns == stamp  # reused, not rebuilt
    rows = pq.read_table(copy / "pairs" / "train.parquet")
    pq.write_table(rows.slice(0, 2), copy / "pairs" / "train.parquet")
    again = load_tokenized(str(copy))[1]
    assert len(again) == 2 and len(first) == rows.num_rows and list(again.query_ids) == list(first.query_ids)[:2]


def test_read_only_data_folder_keeps_its_copy_elsewhere(copy, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith(".arrow") else real_access(p, mode))
    shutil.rmtree(copy / "pairs" / ".arrow")
    datasets = load_tokenized(str(copy))
    assert not list((copy / "pairs" / ".arrow").glob("*.arrow")) and len(datasets[1]) > 0


def test_load_tokenized_valid_split(tokenized):
    valid = {d.name: d for d in load_tokenized(str(tokenized), split="valid")}
    assert len(valid["debian"]) == valid["debian"].meta["valid_rows"] > 0
    assert list(valid["debian"].passages) == read_passages(tokenized / "debian")  # shared with train


def test_load_tokenized_bad_split(tokenized):
    with pytest.raises(DataError, match="split='test' is not one of train, valid"):
        load_tokenized(str(tokenized), split="test")


def test_load_tokenized_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: tokenized data folder not found"):
        load_tokenized(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no dataset folders"):
        load_tokenized(str(tmp_path))


@pytest.mark.parametrize("name", ["train.parquet", "passages.parquet", "meta.json"])
def test_load_tokenized_missing_file_is_named(copy, name):
    os.remove(copy / "pairs" / name)
    with pytest.raises(DataError, match=f"{copy / 'pairs' / name}: missing"):
        load_tokenized(str(copy))


def test_load_tokenized_corrupt_parquet_is_named(copy):
    (copy / "scored" / "train.parquet").write_bytes(b"PAR1 garbage PAR1")
    with pytest.raises(DataError, match=f"{copy / 'scored' / 'train.parquet'}: corrupt parquet file"):
        load_tokenized(str(copy))


def test_load_tokenized_refuses_ids_past_the_passages(copy):
    rows = pq.read_table(copy / "pairs" / "train.parquet")
    pos = pa.array([7] * rows.num_rows, pa.int64())
    rows = rows.set_column(rows.schema.get_field_index("pos_id"), "pos_id", pos)
    pq.write_table(rows, copy / "pairs" / "train.parquet")
    with pytest.raises(DataError, match="train.parquet: passage id 7 out of range \\(passages.parquet has 4 rows\\)"):
        load_tokenized(str(copy))


def test_load_tokenized_missing_column_and_bad_meta(copy):
    path = copy / "pairs" / "train.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["neg_ids"]), path)
    with pytest.raises(DataError, match="train.parquet: missing column\\(s\\) neg_ids"):
        load_tokenized(str(copy))
    (copy / "debian" / "meta.json").write_text('{"name": "debian"')
    with pytest.raises(DataError, match="meta.json: not valid JSON"):
        load_tokenized(str(copy))
    (copy / "debian" / "meta.json").write_text('{"name": "debian"}')
    with pytest.raises(DataError, match="meta.json: missing key\\(s\\) task_type, instruction"):
        load_tokenized(str(copy))


# --- raw dataset discovery and the split hash --------------------------------------------------------------


def test_dataset_files_names_and_errors(tmp_path):
    write_jsonl(tmp_path / "debian" / "train.jsonl", [])
    write_jsonl(tmp_path / "debian" / "extra.jsonl", [])
    (tmp_path / "debian" / "notes.txt").write_text("ignored")
    assert [n for n, _, _ in dataset_files(str(tmp_path / "debian"))] == ["extra", "debian"]
    (tmp_path / "debian" / "extra.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="two datasets named 'extra'"):
        dataset_files(str(tmp_path / "debian"))
    with pytest.raises(DataError, match="no \\*.jsonl or \\*.parquet datasets found"):
        dataset_files(str(tmp_path))
    with pytest.raises(DataError, match="input folder not found"):
        dataset_files(str(tmp_path / "nope"))


def test_stable_unit_is_fixed_by_text_and_seed_alone():
    values = [stable_unit(f"query {i}", 42) for i in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert values == [stable_unit(f"query {i}", 42) for i in range(2000)]
    assert values != [stable_unit(f"query {i}", 43) for i in range(2000)]
    assert 0.07 < sum(v < 0.1 for v in values) / len(values) < 0.13  # uniform enough for a 10% split
    # Another interpreter (another hash salt) gives the same numbers.
    code = "from l2e.data.read import stable_unit; print(repr(stable_unit('query 5', 42)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}, check=True).stdout
    assert float(out) == values[5]


# --- BEIR --------------------------------------------------------------------------------------------------


def test_read_beir_dev_mini():
    corpus, queries, qrels = read_beir(str(DEV_MINI))
    n_lines = lambda name: sum(1 for line in open(DEV_MINI / name) if line.strip())  # noqa: E731
    assert len(corpus) == n_lines("corpus.jsonl") and len(queries) == n_lines("queries.jsonl")
    assert sum(len(v) for v in qrels.values()) == n_lines("qrels.tsv") - 1  # header
    assert qrels["q30"] == {"d29": 1}
    assert queries["q2075"] == "default instances for types in dlist; profiling libraries"
    assert corpus["d5248"].startswith("A procedural macro for generating the most basic getters")


def test_read_beir_titles_and_qrels_folder(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": 1, "title": "Doc", "text": "body"}, {"_id": "d2", "text": "t2"}])
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "find"}])
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "dev.tsv").write_text("q1\t1\t2\nq1\td2\t0\n")
    corpus, queries, qrels = read_beir(str(tmp_path), split="dev")
    assert corpus == {"1": "Doc body", "d2": "t2"} and queries == {"q1": "find"}
    assert qrels == {"q1": {"1": 2, "d2": 0}}
    with pytest.raises(DataError, match="qrels/test.tsv: missing \\(or qrels.tsv\\)"):
        read_beir(str(tmp_path))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d2"\n', "corpus.jsonl:2: malformed JSON"),
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n\n{"text": "b"}\n',
         'corpus.jsonl:3: expected {"_id": ..., "text": "..."}'),
        ("queries.jsonl", '{"_id": "q1", "text": 5}\n', 'queries.jsonl:1: expected {"_id"'),
        ("qrels.tsv", "query-id\tcorpus-id\tscore\nq1 d1 1\n",
         "qrels.tsv:2: expected query-id<TAB>corpus-id<TAB>integer score, got 'q1 d1 1'"),
        ("qrels.tsv", "q1\td1\thigh\n", "qrels.tsv:1: expected query-id"),
    ],
)
def test_read_beir_bad_line_names_file_and_line(tmp_path, name, content, message):
    for f in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        shutil.copy(DEV_MINI / f, tmp_path / f)
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError) as e:
        read_beir(str(tmp_path))
    assert str(tmp_path / message) in str(e.value)


def test_read_beir_missing_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="BEIR folder not found"):
        read_beir(str(tmp_path / "nope"))
    shutil.copy(DEV_MINI / "corpus.jsonl", tmp_path / "corpus.jsonl")
    with pytest.raises(DataError, match=f"{tmp_path / 'queries.jsonl'}: missing; a BEIR folder holds"):
        read_beir(str(tmp_path))


def test_data_stats_json_describes_the_embedded_sample():
    """The committed data_stats.json matches the committed sample (regenerate it with the docstring command)."""
    stats = json.loads((ROOT / "data_stats.json").read_text())
    n = sum(1 for line in open(ROOT / "data" / "sample" / "debian" / "train.jsonl") if line.strip())
    debian = stats["datasets"]["debian"]
    assert debian["input_rows"] == n and debian["train_rows"] + debian["valid_rows"] == n
    assert (stats["query_max_length"], stats["passage_max_length"]) == (64, 256)
    assert stats["tokenizer"] == "tests/assets/smollm2_tokenizer"
