"""Search that scales: the sparse inverted index, the ColBERT candidate stage, long documents in chunks."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from helpers_models import TINY_MODELS, tiny_config, tiny_qwen3
from l2e.core.errors import L2EError
from l2e.data.tokens import chunk_windows, encode_texts
from l2e.model.embedding_model import build_model
from l2e.retrieval.embedder import Embedder
from l2e.model.heads import maxsim
from l2e.retrieval.search import (ChunkedScorer, ColbertCandidates, RepScorer, Reps, SparseIndex, TokenVectors,
                                  _padded, default_centroids, kmeans, search_top_k)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BEIR_TINY = ROOT / "tests" / "assets" / "beir_tiny"
DOCS = ["the quick brown fox jumps over the lazy dog " * 6, "a short one", "",
        "rotary position embeddings rotate query and key vectors by position " * 3]


@pytest.mark.parametrize("density", [0.001, 0.3])  # posting lists, and the dense fallback for unsparse vectors
def test_sparse_index_scores_equal_the_dense_product(density):
    rng = np.random.default_rng(0)
    docs = scipy.sparse.random(300, 5000, density=density, random_state=1, dtype=np.float32, format="csr")
    queries = scipy.sparse.random(20, 5000, density=density * 3, random_state=2, dtype=np.float32, format="csr")
    index = SparseIndex(docs)
    assert (index.dense is not None) == (density > SparseIndex.DENSE_ABOVE)
    np.testing.assert_allclose(index.scores(queries), queries.toarray() @ docs.toarray().T, rtol=1e-5, atol=1e-6)
    assert rng is not None


def unit_tokens(rng, lengths, dim=8):
    out = [rng.standard_normal((n, dim)).astype(np.float32) for n in lengths]
    return [v / np.linalg.norm(v, axis=1, keepdims=True) for v in out]


def test_flat_token_vectors_score_as_padded_maxsim():
    rng = np.random.default_rng(0)
    docs = unit_tokens(rng, rng.integers(1, 30, size=70))
    queries = unit_tokens(rng, [5, 1, 12, 0, 7])  # a query with no token vectors scores 0, as maxsim gives
    flat = TokenVectors(docs, block=16)  # several length-sorted blocks, each padded with its documents' last tokens
    (q, qm), (d, dm) = _padded(queries), _padded(docs)
    want = maxsim(q, qm, d, dm).numpy()
    np.testing.assert_allclose(flat.maxsim(queries), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat.maxsim(queries, sims_per_step=1), want, rtol=1e-5, atol=1e-6)  # one query a step
    rows = np.array([3, 0, 69, 3, 41])
    np.testing.assert_allclose(flat.maxsim_rows(queries[2], rows), want[2, rows], rtol=1e-5, atol=1e-6)
    assert flat.tokens.shape == (sum(len(v) for v in docs), 8)  # nothing padded is stored


def test_a_document_without_token_vectors_is_named():
    rng = np.random.default_rng(0)
    with pytest.raises(L2EError, match="document 2 has no token vectors"):
        TokenVectors(unit_tokens(rng, [3, 4, 0, 2]))


def test_kmeans_and_centroid_counts():
    pts = torch.nn.functional.normalize(torch.randn(500, 8), dim=1)
    cents = kmeans(pts, 16, seed=0)
    assert cents.shape == (16, 8) and torch.allclose(cents.norm(dim=1), torch.ones(16), atol=1e-5)
    assert torch.equal(cents, kmeans(pts, 16, seed=0))  # seeded
    assert default_centroids(1) == 1 and default_centroids(100) == 100 and default_centroids(10**7) == 4096


@pytest.fixture(scope="module")
def colbert_embedder():
    model, tok = build_model(tiny_config("qwen3", pooling_mode="mean", colbert_enabled=True, colbert_dim=16))
    return Embedder(model, tok, device="cpu")


def corpus_and_queries():
    docs = [json.loads(line)["text"] for line in (BEIR_TINY / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line)["text"] for line in (BEIR_TINY / "queries.jsonl").read_text().splitlines()]
    return docs * 3, queries  # repeated: more documents than candidates


def test_colbert_candidates_returning_everything_equal_exhaustive_maxsim(colbert_embedder):
    docs, queries = corpus_and_queries()
    reps = Reps(colbert_embedder, ["colbert"])
    exhaustive = RepScorer(reps, "colbert")
    exhaustive.index(docs)
    want = search_top_k(exhaustive, queries, 10)
    everything = ColbertCandidates(reps, "colbert", candidates=len(docs), nprobe=10**6)
    everything.index(docs)
    got = search_top_k(everything, queries, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    # a real candidate stage: fewer candidates than documents, still the right shape and exact scores on what it keeps
    full = exhaustive.score(queries)
    for refine in (5, 12):  # without and with the centroid-interaction stage between probing and exact MaxSim
        few = ColbertCandidates(reps, "colbert", candidates=5, nprobe=2, centroids=4, refine=refine)
        few.index(docs)
        scores, idx = search_top_k(few, queries, 10)
        assert idx.shape == (len(queries), 5)  # only the exactly re-scored candidates come back
        np.testing.assert_allclose(scores, np.take_along_axis(full, idx, 1), rtol=1e-5)


def test_colbert_stages_score_what_they_promise():
    """Probe scores and centroid-interaction scores against their definitions, computed the slow way."""
    rng = np.random.default_rng(1)
    docs = unit_tokens(rng, rng.integers(1, 9, size=40))

    class Fixed:  # a Reps with fixed token vectors
        def __init__(self):
            self.docs = {"colbert": TokenVectors(docs)}

        def index(self, texts):
            pass

    cand = ColbertCandidates(Fixed(), "colbert", candidates=8, nprobe=3, centroids=6)
    cand.index([])
    q = unit_tokens(rng, [4])[0]
    sims = q @ cand.centroids.numpy().T  # (query tokens, centroids)
    probed = np.argsort(-sims, axis=1)[:, :3]
    want_probe, want_interact = np.zeros(len(docs)), np.zeros(len(docs))
    start = 0
    for j, d in enumerate(docs):
        codes = cand.codes[start:start + len(d)]
        start += len(d)
        assert np.array_equal(codes, (d @ cand.centroids.numpy().T).argmax(axis=1))
        for t in range(len(q)):
            hits = [sims[t, c] for c in probed[t] if c in codes]
            want_probe[j] += max(hits) if hits else 0.0
            want_interact[j] += sims[t, codes].max()
    np.testing.assert_allclose(cand.approximate(sims), want_probe / len(q), rtol=1e-5, atol=1e-6)
    rows = np.arange(len(docs))[::-1].copy()
    np.testing.assert_allclose(cand.interact(sims, rows), want_interact[rows] / len(q), rtol=1e-5, atol=1e-6)


def test_chunk_windows_cover_every_token_and_a_one_chunk_text_is_encode_texts():
    _, tok = build_model(tiny_config("qwen3"))
    windows = chunk_windows(tok, DOCS, chunk_tokens=8, window_tokens=8 * 3 + 1)
    for text, per_text in zip(DOCS, windows):
        body = tok(text, add_special_tokens=False)["input_ids"]
        assert [t for ids, _ in per_text for t in ids[:-1]] == body  # every token once, EOS closing each window
        for ids, spans in per_text:
            assert spans[0][0] == 0 and spans[-1][1] == len(ids) and len(ids) <= 25
            assert all(a < b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    short = chunk_windows(tok, ["a short one"], chunk_tokens=64, window_tokens=128)[0]
    assert short == [(encode_texts(tok, ["a short one"], 128)[0][0], [(0, len(short[0][0]))])]
    with pytest.raises(ValueError, match="holds no chunk"):
        chunk_windows(tok, DOCS, chunk_tokens=64, window_tokens=32)


@pytest.mark.parametrize("model_type", TINY_MODELS)
def test_one_chunk_documents_encode_as_plain_encoding(model_type):
    """Late chunking and maxp of a document that fits one chunk give exactly the plain vector."""
    model, tok = build_model(tiny_config(model_type, pooling_mode="mean", bi_attn_enabled=True))
    emb = Embedder(model, tok, device="cpu", max_length=256)
    texts = ["a short one", "rotary position embeddings rotate vectors"]
    plain = emb.encode_corpus(texts)
    for mode in ("late", "maxp"):
        chunks = emb.encode_corpus(texts, chunking=mode, chunk_tokens=64)
        assert [c.shape for c in chunks] == [(1, plain.shape[1])] * 2
        np.testing.assert_allclose(np.concatenate(chunks), plain, atol=2e-6)


def test_chunking_long_documents():
    model, tok = build_model(tiny_config("qwen3", pooling_mode="mean", bi_attn_enabled=True))
    emb = Embedder(model, tok, device="cpu", max_length=32)
    n_tokens = [len(tok(d, add_special_tokens=False)["input_ids"]) for d in DOCS]
    maxp = emb.encode_corpus(DOCS, chunking="maxp", chunk_tokens=8)
    late = emb.encode_corpus(DOCS, chunking="late", chunk_tokens=8)
    assert [len(c) for c in maxp] == [len(c) for c in late] == [max(1, -(-n // 8)) for n in n_tokens]
    # maxp chunk i is the plain encoding of the chunk's own text
    ids = tok(DOCS[0], add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(maxp[0][1], emb.encode_corpus([tok.decode(ids[8:16])])[0], atol=1e-5)
    # late chunks have read their neighbours: they differ from maxp's on a multi-chunk document
    assert not np.allclose(late[0], maxp[0], atol=1e-3)
    for c in late[:2] + late[3:] + maxp[:2] + maxp[3:]:  # (the tiny random model maps a lone EOS to a zero vector)
        np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    # quantized chunks
    codes = emb.encode_corpus(DOCS, chunking="maxp", chunk_tokens=8, precision="binary")
    assert [c.shape[0] for c in codes] == [len(c) for c in maxp] and codes[0].dtype == np.int8


def test_chunking_errors():
    model, tok = build_model(tiny_config("qwen3", pooling_mode="eos"))
    emb = Embedder(model, tok, device="cpu", max_length=32)
    with pytest.raises(L2EError, match="pooling 'eos' takes one token per text"):
        emb.encode_corpus(DOCS, chunking="late", chunk_tokens=8)
    assert len(emb.encode_corpus(DOCS, chunking="maxp", chunk_tokens=8)) == len(DOCS)  # maxp works with eos
    with pytest.raises(L2EError, match="chunking='para'"):
        emb.encode_corpus(DOCS, chunking="para", chunk_tokens=8)
    with pytest.raises(L2EError, match="no instruction"):
        emb.encode(DOCS, instruction="Query: ", chunking="maxp", chunk_tokens=8)


def test_chunked_scorer_takes_each_documents_best_chunk():
    model, tok = build_model(tiny_config("qwen3", pooling_mode="mean", bi_attn_enabled=True))
    emb = Embedder(model, tok, device="cpu", max_length=32)
    reps = Reps(emb, ["dense"])
    scorer = ChunkedScorer(reps, "maxp", 8)
    scorer.index(DOCS)
    queries = ["fox and dog", "position vectors"]
    q = emb.encode_queries(queries)
    chunks = emb.encode_corpus(DOCS, chunking="maxp", chunk_tokens=8)
    np.testing.assert_allclose(scorer.score(queries), np.stack([[(c @ v).max() for c in chunks] for v in q]), atol=1e-6)
    assert scorer.index_bytes_per_doc() == pytest.approx(sum(len(c) for c in chunks) * 64 * 4 / len(DOCS))


def test_evaluator_rows_for_candidates_and_chunking(tmp_path):
    import evaluate_mteb
    from l2e.config import from_dict
    from l2e.export.final import export_final

    cfg = from_dict({"model_path": tiny_qwen3(), "max_seq_length": 64, "colbert_enabled": True, "colbert_dim": 16,
                     "sparse_enabled": True, "pooling_mode": "mean", "bi_attn_enabled": True}, check_paths=False)
    model, tok = build_model(cfg)
    final = export_final(model, tok, str(tmp_path / "final"))
    out = tmp_path / "eval"
    assert evaluate_mteb.main(["--ckpt_dir", final, "--data_dir", str(BEIR_TINY), "--output_folder", str(out),
                               "--reps", "sparse,colbert,hybrid", "--colbert_candidates", "1000", "--colbert_nprobe", "1000",
                               "--colbert_refine", "2000",
                               "--doc_chunking", "maxp,late", "--chunk_tokens", "8"]) == 0
    rows = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    assert set(rows) == {"final", "final:sparse", "final:colbert-candidates(1000,nprobe1000,refine2000)", "final:dense-maxp(8)",
                         "final:dense-late(8)", "final:hybrid(dense1+sparse0.3+colbert1)"}  # fusion: exhaustive scores
    assert all(0 <= r["ndcg_at_10"] <= 1 and r["query_ms"] >= 0 for m, r in rows.items() if m != "final")


def test_dense_search_above_the_threshold_goes_through_faiss_with_the_same_ranking(monkeypatch):
    import l2e.retrieval.search as search

    if not search.has_faiss():
        pytest.skip("faiss-cpu is optional (pip install faiss-cpu, the [mining] extra)")
    model, tok = build_model(tiny_config("qwen3", pooling_mode="mean"))
    reps = Reps(Embedder(model, tok, device="cpu"), ["dense"])
    scorer = RepScorer(reps, "dense")
    docs, queries = corpus_and_queries()
    docs = list(dict.fromkeys(docs))  # unique documents: equal scores at the cut would be faiss' arbitrary pick
    scorer.index(docs)
    want = search_top_k(scorer, queries, 7)
    monkeypatch.setattr(search, "FAISS_ABOVE", 1)
    got = search_top_k(scorer, queries, 7)
    assert hasattr(scorer, "_faiss")
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    assert (got[1] == want[1]).mean() > 0.95  # exact search both ways; only float near-ties may swap
