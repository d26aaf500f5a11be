"""Representation heads: hand-computed scores, masking, and the peers' definitions as oracles."""
import math

import pytest
import torch

from helpers_models import tiny_config
from l2e.data.tokens import encode_texts, pad_batch
from l2e.losses import build_loss
from l2e.model.embedding_model import build_model
from l2e.model.heads import bm25_idf, flops, lexical_weights, maxsim, sparse_scores, splade_pool


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- hand-computed ------------------------------------------------------------------------------------------------


def test_lexical_weights_max_over_repeats_and_masking_by_hand():
    weights = t([[0.5, 2.0, 1.0, 9.0], [0.3, 0.0, 0.7, 0.1]])
    ids = torch.tensor([[4, 4, 1, 0], [2, 3, 2, 0]])
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])  # last position: padding (weight 9 must not count)
    out = lexical_weights(weights, ids, keep, vocab_size=6)
    torch.testing.assert_close(out, t([[0, 1.0, 0, 0, 2.0, 0], [0, 0, 0.7, 0.0, 0, 0]]))
    assert sparse_scores(out, out).flatten().tolist() == pytest.approx([5.0, 0.0, 0.0, 0.49])


def test_splade_pool_and_flops_by_hand():
    logits = t([[[1.0, -2.0, math.e - 1], [3.0, 0.5, 100.0]]])  # (1, 2 tokens, 3 vocab)
    keep = torch.tensor([[1, 0]])  # the second token is padding: its 100 never counts
    out = splade_pool(logits, keep)
    torch.testing.assert_close(out, t([[math.log(2), 0.0, 1.0]]))
    reps = t([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert flops(reps).item() == pytest.approx(2.0**2 + 0 + 1.0**2)  # sum_j mean_i(w_ij)^2


def test_maxsim_by_hand():
    q = t([[[1, 0], [0, 1], [5, 5]]])  # third query token is masked out
    q_mask = torch.tensor([[1, 1, 0]])
    d = t([[[1, 0], [0.6, 0.8], [9, 9]], [[0, -1], [-1, 0], [0, 0]]])
    d_mask = torch.tensor([[1, 1, 0], [1, 1, 0]])  # doc token 3 is padding
    # doc 0: q1 -> max(1, .6) = 1, q2 -> max(0, .8) = .8 ; doc 1: q1 -> max(0, -1) = 0, q2 -> max(-1, 0) = 0
    assert maxsim(q, q_mask, d, d_mask, reduce="sum").flatten().tolist() == pytest.approx([1.8, 0.0])
    assert maxsim(q, q_mask, d, d_mask).flatten().tolist() == pytest.approx([0.9, 0.0])


# --- peers as oracles -------------------------------------------------------------------------------------------


def flag_embedding_sparse(token_weights, input_ids, vocab_size, unused):
    """FlagEmbedding 1.4.2 ``_sparse_embedding`` (inference path), copied: the definition l2e follows."""
    sparse = torch.zeros(input_ids.size(0), vocab_size, dtype=token_weights.dtype)
    sparse = sparse.scatter_reduce(dim=-1, index=input_ids, src=token_weights.squeeze(-1), reduce="amax")
    sparse[:, unused] *= 0.0
    return sparse


def test_lexical_weights_follow_bge_m3():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (3, 12), generator=g)
    ids[:, -1] = 2  # EOS, one of the unused ids
    weights = torch.relu(torch.randn(3, 12, 1, generator=g))
    unused = [0, 1, 2]
    ours = lexical_weights(weights.squeeze(-1), ids, ~torch.isin(ids, torch.tensor(unused)), 30)
    torch.testing.assert_close(ours, flag_embedding_sparse(weights, ids, 30, unused))


def test_splade_pool_equals_sentence_transformers_splade_pooling():
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 7, 50, generator=g) * 3
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    st = SpladePooling(pooling_strategy="max", activation_function="relu", embedding_dimension=50)
    want = st({"token_embeddings": logits.clone(), "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(splade_pool(logits, mask), want)


def pylate_colbert_scores(queries, documents, queries_mask=None, documents_mask=None):
    """PyLate 1.6.0 ``colbert_scores`` (torch path), copied: PyLate cannot be installed next to ST 6.2."""
    scores = torch.einsum("ash,bth->abst", queries, documents)
    if queries_mask is not None:
        scores = scores * queries_mask.unsqueeze(1).unsqueeze(3)
    if documents_mask is not None:
        scores = scores * documents_mask.unsqueeze(0).unsqueeze(2)
    return scores.max(axis=-1).values.sum(axis=-1)


def test_maxsim_equals_pylate_and_sentence_transformers():
    from sentence_transformers.util.similarity import maxsim as st_maxsim

    g = torch.Generator().manual_seed(2)
    q = torch.nn.functional.normalize(torch.rand(3, 5, 8, generator=g), dim=-1)  # non-negative: PyLate's x0 masking
    d = torch.nn.functional.normalize(torch.rand(4, 6, 8, generator=g), dim=-1)  # and ST's exclusion then agree
    q_mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]])
    d_mask = torch.tensor([[1] * 6, [1] * 2 + [0] * 4, [1] * 5 + [0], [1] * 6])
    ours_sum = maxsim(q, q_mask, d, d_mask, reduce="sum")
    torch.testing.assert_close(ours_sum, pylate_colbert_scores(q, d, q_mask, d_mask))
    torch.testing.assert_close(ours_sum, st_maxsim(q, d, q_mask.bool(), d_mask.bool()), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maxsim(q, q_mask, d, d_mask), st_maxsim(q, d, q_mask.bool(), d_mask.bool(),
                                                                       length_normalize=True), atol=1e-5, rtol=1e-5)


# --- on a model: instruction and special tokens -----------------------------------------------------------------


@pytest.fixture(scope="module")
def headed():
    return build_model(tiny_config("qwen3", sparse_enabled=True, splade_enabled=True, colbert_enabled=True,
                                   colbert_dim=16, pooling_mode="mean", bi_attn_enabled=True, max_seq_length=64))


def test_lexical_head_never_weighs_instruction_special_or_padding(headed):
    model, tok = headed
    ids, lens = encode_texts(tok, ["apple pie recipe", "x"], 32, "Instruct: find\nQuery:")
    batch = pad_batch(ids, tok.pad_token_id, lens)
    with torch.no_grad():
        reps = model.eval().encode_all(**batch)
    instruction = set(tok("Instruct: find\nQuery:", add_special_tokens=False)["input_ids"])
    text = set(tok("apple pie recipe", add_special_tokens=False)["input_ids"])
    weighted = set(torch.nonzero(reps["sparse"][0]).flatten().tolist())
    assert weighted <= text and not (weighted & (instruction - text)) and not weighted & set(tok.all_special_ids)
    assert reps["colbert"].shape[:2] == batch["input_ids"].shape and reps["colbert_mask"].tolist() == \
        batch["attention_mask"].bool().tolist()
    torch.testing.assert_close(reps["colbert"][0].norm(dim=-1), torch.ones(reps["colbert"].shape[1]))


def test_head_losses_train_every_head(headed):
    model, tok = headed
    cfg = tiny_config("qwen3", sparse_enabled=True, splade_enabled=True, colbert_enabled=True, colbert_dim=16,
                      self_distill_enabled=True, max_seq_length=64)

    def group(texts):
        ids, lens = encode_texts(tok, texts, 32)
        return model.train().encode_all(**pad_batch(ids, tok.pad_token_id, lens))

    # Lexical scores need shared tokens to have a gradient at all: the texts overlap.
    q, p = group(["the cat sleeps", "the dog barks"]), group(["the cat sleeps on a mat", "the dog barks at night"])
    n = group(["the fish swims", "the cat eats", "a dog sleeps", "the pig"])
    out = build_loss(cfg)(q["dense"], p["dense"], n["dense"].view(2, 2, -1), pos_keys=torch.tensor([0, 1]),
                          neg_keys=torch.tensor([[2, 3], [4, 5]]), heads=(q, p, n))
    assert {"sparse", "splade", "splade_flops", "colbert", "self_distill"} <= set(out)
    out["loss"].backward()
    for name in ("heads.sparse.linear.weight", "heads.colbert.linear.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_head_weights_reload_and_stay_out_of_the_engines_weight_files(headed, tmp_path):
    import glob
    import os

    from l2e.model.embedding_model import HEADS_FILE, load_embedding_model

    model, tok = headed
    model.eval().save(str(tmp_path), tok)
    # vLLM loads every top-level *.safetensors as backbone weights: the heads' file must not be one of them.
    assert [os.path.basename(p) for p in glob.glob(str(tmp_path / "*.safetensors"))] == ["model.safetensors"]
    assert (tmp_path / HEADS_FILE).is_file()
    again = load_embedding_model(str(tmp_path))[0]
    for name, value in model.heads.state_dict().items():
        torch.testing.assert_close(again.heads.state_dict()[name], value, rtol=0, atol=0)


# --- the lexical head started from BM25's idf (sparse_idf) ---------------------------------------------------------


def test_bm25_idf_is_bm25s_lucene_idf():
    from bm25s.scoring import _score_idf_lucene

    df = torch.tensor([0, 1, 5, 10])
    assert bm25_idf(df, 10).tolist() == pytest.approx([_score_idf_lucene(int(d), N=10) for d in df], rel=1e-6)


def test_document_frequency_counts_each_passage_once_per_token(tmp_path):
    from collections import Counter

    from helpers_data import read_passages
    from helpers_train import make_training_data
    from l2e.data.read import document_frequency, load_tokenized

    data = make_training_data(tmp_path, rows=8, negatives=1)
    passages = read_passages(data / "debian")
    df, n = document_frequency(load_tokenized(str(data), "train"), 50_000)
    expected = Counter(t for p in passages for t in set(p))
    assert n == len(passages) and int(df.sum()) == sum(expected.values())
    assert all(df[t] == c for t, c in expected.items())
    assert max(expected.values()) > 1 and any(p.count(t) > 1 for p in passages for t in p)  # the case is real


def test_idf_head_starts_as_bm25_term_weights():
    """At the start a shared token scores its idf (BM25 with tf 1, no length norm), whatever the states are."""
    model, tok = build_model(tiny_config("qwen3", sparse_enabled=True, sparse_idf=True, pooling_mode="mean",
                                         max_seq_length=64))
    head = model.heads["sparse"]
    idf = torch.rand(head.vocab_size, generator=torch.Generator().manual_seed(1)) * 4 + 0.5
    head.start_from_idf(idf)
    texts = ["red apple pie", "a recipe for apple pie with red apples"]
    ids, lens = encode_texts(tok, texts, 32)
    with torch.no_grad():
        reps = model.eval().encode_all(**pad_batch(ids, tok.pad_token_id, lens))["sparse"]
    shared = (set(ids[0]) & set(ids[1])) - set(tok.all_special_ids)
    assert shared
    expected = sum(float(idf[t]) for t in shared)
    assert float(sparse_scores(reps[:1], reps[1:])) == pytest.approx(expected, rel=1e-5)


def test_an_earlier_stage_idf_head_is_carried_not_restarted(tmp_path):
    model, tok = build_model(tiny_config("qwen3", sparse_enabled=True, sparse_idf=True, max_seq_length=64))
    model.heads["sparse"].start_from_idf(torch.full((model.heads["sparse"].vocab_size,), 2.0))
    model.save(str(tmp_path), tok)
    again, _ = build_model(tiny_config("qwen3", sparse_enabled=True, sparse_idf=True, init_from=str(tmp_path)))
    assert "heads.sparse.idf" in again.carried_extras
    assert torch.equal(again.heads["sparse"].idf, model.heads["sparse"].idf)


def test_sparse_idf_without_the_sparse_head_is_refused():
    from l2e.config import ConfigError

    with pytest.raises(ConfigError, match="sparse_idf=true .* set sparse_enabled=true"):
        tiny_config("qwen3", sparse_idf=True)
