"""Quantized embeddings: sentence-transformers' quantize_embeddings bit for bit, exact round trips, two-stage search,
the Embedder's precision option and the evaluator's dims x precision rows."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_models import tiny_config, tiny_qwen3
from l2e.retrieval.quantize import bytes_per_vector, calibrate, dequantize, first_stage_scores, quantize, rescore
from l2e.retrieval.search import quantized_top_k, top_k

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", ["int8", "binary", "float32"])
def test_quantize_equals_sentence_transformers(precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    rng = np.random.default_rng(0)
    corpus, queries = unit(rng, 300, 37), unit(rng, 20, 37)  # 37: binary pads the last byte
    ranges = calibrate(corpus)
    ours = quantize(queries, precision, ranges if precision == "int8" else None)
    theirs = quantize_embeddings(queries, precision, ranges=ranges if precision == "int8" else None)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    # without ranges both calibrate on the embeddings themselves
    np.testing.assert_array_equal(quantize(corpus, precision), quantize_embeddings(corpus, precision))


def test_round_trips_are_exact_where_the_maths_is():
    rng = np.random.default_rng(1)
    x = unit(rng, 50, 24)
    # binary: the signs come back exactly
    np.testing.assert_array_equal(dequantize(quantize(x, "binary"), "binary", dim=24, signs=True), np.where(x > 0, 1, -1))
    # int8: values on a bucket's lower edge come back exactly; any value lies within one step above its bucket's edge
    ranges = np.vstack([np.full(24, -1.0, np.float32), np.full(24, 1.0, np.float32)])
    step = np.float32(2 / 255)
    edges = (np.arange(24, dtype=np.float32) * 7 % 255 * step - 1)[None]
    np.testing.assert_allclose(dequantize(quantize(edges + step / 2, "int8", ranges), "int8", ranges), edges, atol=1e-6)
    back = dequantize(quantize(x, "int8", ranges), "int8", ranges)
    assert np.all(back <= x + 1e-6) and np.all(x - back < step + 1e-6)
    # out-of-range values land in the end buckets, never wrapped round to the other end
    assert quantize(np.array([[5.0] * 24, [-5.0] * 24], np.float32), "int8", ranges).tolist() == [[127] * 24, [-128] * 24]
    assert [bytes_per_vector(576, p) for p in ("float32", "int8", "binary")] == [2304, 576, 72]


def test_binary_first_stage_is_dims_minus_twice_the_hamming_distance():
    rng = np.random.default_rng(2)
    q, d = unit(rng, 5, 20), unit(rng, 9, 20)
    scores = first_stage_scores(q, quantize(d, "binary"), "binary", None, 20)
    hamming = ((q[:, None, :] > 0) != (d[None, :, :] > 0)).sum(-1)
    np.testing.assert_array_equal(scores, 20 - 2 * hamming)


def test_rescoring_everything_equals_float_search_over_the_stored_codes():
    """Rescoring every document ranks by the float query against the stored codes (sentence-transformers' rule);
    with int8 codes that fine, the top-10 equals exact float search on these vectors."""
    rng = np.random.default_rng(3)
    q, d = unit(rng, 30, 64), unit(rng, 200, 64)
    ranges = calibrate(d)
    codes = quantize(d, "int8", ranges)
    scores, idx = quantized_top_k(q, codes, 10, "int8", ranges, 64, rescore_k=200)
    every = np.tile(np.arange(200), (30, 1))
    expect = top_k(rescore(q, codes, every, "int8", ranges, 64).astype(np.float32), 10)
    np.testing.assert_array_equal(idx, expect[1])
    np.testing.assert_allclose(scores, expect[0], rtol=1e-5)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, top_k(q @ d.T, 10)[1])])
    assert overlap > 0.9
    # a shorter rescoring list returns only the re-scored candidates
    assert quantized_top_k(q, quantize(d, "binary"), 100, "binary", None, 64, rescore_k=40)[1].shape == (30, 40)


def test_embedder_encode_precision():
    from l2e.model.embedding_model import build_model
    from l2e.retrieval.embedder import Embedder

    model, tok = build_model(tiny_config("qwen3", pooling_mode="mean"))
    emb = Embedder(model, tok, device="cpu")
    texts = ["one text", "another text here", "a third", "and the fourth one"]
    full = emb.encode(texts)
    ranges = calibrate(full)
    np.testing.assert_array_equal(emb.encode(texts, precision="int8", ranges=ranges), quantize(full, "int8", ranges))
    np.testing.assert_array_equal(emb.encode(texts, precision="binary", dim=16), quantize(full[:, :16] / np.linalg.norm(
        full[:, :16], axis=1, keepdims=True), "binary"))
    with pytest.raises(ValueError, match="embedding precision 'int4'"):
        emb.encode(texts, precision="int4")


def test_evaluator_dims_by_precision_rows(tmp_path):
    """One row per size x precision, each with its index bytes per document; float32 through the quantized path
    scores what MTEB's dense row scores."""
    import evaluate_mteb
    from l2e.config import from_dict
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    cfg = from_dict({"model_path": tiny_qwen3(), "max_seq_length": 64, "pooling_mode": "mean"}, check_paths=False)
    model, tok = build_model(cfg)
    final = export_final(model, tok, str(tmp_path / "final"))
    out = tmp_path / "eval"
    assert evaluate_mteb.main(["--ckpt_dir", final, "--data_dir", str(ROOT / "tests" / "assets" / "beir_tiny"),
                               "--output_folder", str(out), "--dims", "32,64", "--embedding_precision",
                               "float32,int8,binary", "--rescore", "100"]) == 0
    rows = {(r["model"], r["dim"]): r for r in json.loads((out / "summary.json").read_text())}
    for dim in (32, 64):
        assert rows[("final:dense-float32", dim)]["ndcg_at_10"] == pytest.approx(rows[("final", dim)]["ndcg_at_10"],
                                                                                  abs=1e-6)
        assert rows[("final:dense-int8-rescore100", dim)]["index_bytes_per_doc"] == dim
        assert rows[("final:dense-binary-rescore100", dim)]["index_bytes_per_doc"] == dim // 8
        assert rows[("final:dense-float32", dim)]["index_bytes_per_doc"] == 4 * dim
    assert "| final:dense-binary-rescore100 | 32 |" in (out / "summary.md").read_text()


def test_evaluator_refuses_an_unknown_precision(capsys):
    import evaluate_mteb

    assert evaluate_mteb.main(["--bm25", "--data_dir", str(ROOT / "tests" / "assets" / "beir_tiny"),
                               "--embedding_precision", "float32,int4"]) == 2
    assert "error: --embedding_precision int4: use some of float32,int8,binary" in capsys.readouterr().err
