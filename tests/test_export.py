"""The final folder loads in transformers.AutoModel and sentence-transformers with l2e's vectors."""
import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from helpers_models import tiny_llama, tiny_qwen3
from l2e.config import from_dict
from l2e.export.final import export_final
from l2e.model.embedding_model import build_model
from l2e.retrieval.embedder import Embedder

# Queries of every length: short, one between query_max_length and passage_max_length (16 and 48 tokens in
# build()), and one longer than both: the export must cut each where l2e does.
QUERIES = ["7-Zip file archiver with a high compression ratio", "x", "GNU chess engine",
           "library for reading and writing compressed archives in many formats with streaming support",
           "command line tool that converts documents between markup formats such as markdown, html, latex and docx",
           " ".join(["package manager frontend with dependency resolution and download caching"] * 8)]
DOCS = ["7-Zip is a file archiver with a high compression ratio. It supports many formats.",
        "Gnuchess is an updated version of the GNU chess playing program.",
        " ".join(["A very long description that runs past the passage limit of the export."] * 10)]
INSTRUCTION = "Instruct: Given a package summary, retrieve its description\nQuery:"
# Every pooling x {no instruction, instruction pooled, instruction skipped (ending on a token boundary, and with a
# trailing space that merges into the first word)}; eos runs causal, the others bidirectional.
MODES = {"noinst": dict(query_instruction=""), "keep": dict(query_instruction=INSTRUCTION),
         "skip": dict(query_instruction=INSTRUCTION, skip_instruction=True),
         "skip-space": dict(query_instruction=INSTRUCTION + " ", skip_instruction=True)}
GRID = {f"{pool}-{mode}": dict(pooling_mode=pool, bi_attn_enabled=pool != "eos", **fields)
        for pool in ("eos", "mean", "weighted_mean", "cls") for mode, fields in MODES.items()}
CASES = {**GRID, "lora_merged": dict(pooling_mode="mean", bi_attn_enabled=True, lora_enabled=True, lora_r=4,
                                     lora_alpha=8, skip_instruction=True, query_instruction=INSTRUCTION + " ")}


def build(tmp_path, prepare=None, **fields):
    cfg = from_dict({"model_path": tiny_qwen3(), "max_seq_length": 64, "query_max_length": 16,
                     "passage_max_length": 48, **fields}, check_paths=False)
    model, tok = build_model(cfg)
    if prepare is not None:
        prepare(model)
    if cfg.lora_enabled:  # make the adapter non-zero so merging matters
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    path = export_final(model, tok, str(tmp_path / "final"), merge_lora=cfg.lora_merge_on_export, training_config=cfg)
    return path, cfg


@pytest.mark.parametrize("case", sorted(CASES))
def test_sentence_transformers_gives_l2e_vectors(tmp_path, case):
    path, cfg = build(tmp_path, **CASES[case])
    ours = Embedder.from_checkpoint(path)
    st = SentenceTransformer(path, device="cpu")
    q_st = st.encode(QUERIES, prompt_name="query", normalize_embeddings=True, convert_to_numpy=True)
    d_st = st.encode(DOCS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(q_st, ours.encode_queries(QUERIES), atol=1e-5)
    np.testing.assert_allclose(d_st, ours.encode_corpus(DOCS), atol=1e-5)
    # Both cut queries and documents at the one inference length (the longer training cap): the long query
    # really was cut, by both, at the same token.
    assert st.max_seq_length == ours.query_max_length == ours.max_length == 48
    lengths = [len(st.tokenizer(cfg.query_instruction + q)["input_ids"]) for q in QUERIES]
    assert any(16 < n <= 48 for n in lengths) and max(lengths) > 48, lengths  # between both caps, past both


def test_inline_instruction_matches_sentence_transformers_prompt(tmp_path):
    """A query with its instruction inline (instruction_separator) pools like the same text given to
    sentence-transformers as prompt + text."""
    path, _ = build(tmp_path, pooling_mode="mean", bi_attn_enabled=True, skip_instruction=True,
                    instruction_separator="Query:")
    ours = Embedder.from_checkpoint(path).encode_queries([f"{INSTRUCTION} {q}" for q in QUERIES])
    st = SentenceTransformer(path, device="cpu").encode([f" {q}" for q in QUERIES], prompt=INSTRUCTION,
                                                        normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(st, ours, atol=1e-5)


def test_export_reads_the_model_settings_not_the_config(tmp_path):
    path, cfg = build(tmp_path, pooling_mode="mean", skip_instruction=True, query_instruction=INSTRUCTION)
    pooling = json.loads((tmp_path / "final" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["include_prompt"] is False
    prompts = json.loads((tmp_path / "final" / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": INSTRUCTION, "document": ""}
    assert json.loads((tmp_path / "final" / "training_config.json").read_text())["pooling_mode"] == "mean"
def test_final_folder_loads_in_transformers_with_attention_setting(tmp_path):
    path, _ = build(tmp_path, pooling_mode="mean", bi_attn_enabled=True)
    model = AutoModel.from_pretrained(path)
    assert model.config.is_causal is False
    ids = torch.tensor([[5, 6, 7, 8]])
    changed = ids.clone()
    changed[0, 3] = 9
    with torch.no_grad():
        a, b = model(input_ids=ids).last_hidden_state, model(input_ids=changed).last_hidden_state
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-6  # bidirectional after reload


def test_lora_export_writes_adapter_and_merged_model(tmp_path):
    path, _ = build(tmp_path, **CASES["lora_merged"])
    assert (tmp_path / "final_adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "final" / "adapter_config.json").exists()
    merged = Embedder.from_checkpoint(path).encode(DOCS)
    adapter = Embedder.from_checkpoint(str(tmp_path / "final_adapter")).encode(DOCS)
    np.testing.assert_allclose(merged, adapter, atol=1e-5)


def test_unmerged_lora_export_is_an_adapter_final(tmp_path):
    path, _ = build(tmp_path, **{**CASES["lora_merged"], "lora_merge_on_export": False})
    assert (tmp_path / "final" / "adapter_config.json").exists() and not (tmp_path / "final_adapter").exists()
    emb = Embedder.from_checkpoint(path)
    assert emb.model.is_adapter and emb.encode(DOCS).shape == (len(DOCS), 64)


def test_llama_export_roundtrip(tmp_path):
    cfg = from_dict({"model_path": tiny_llama(), "max_seq_length": 64, "pooling_mode": "eos"}, check_paths=False)
    model, tok = build_model(cfg)
    path = export_final(model, tok, str(tmp_path / "final"))
    st = SentenceTransformer(path, device="cpu")
    np.testing.assert_allclose(st.encode(DOCS, normalize_embeddings=True), Embedder.from_checkpoint(path).encode(DOCS),
                               atol=1e-5)


def test_head_exports_load_in_their_peers_with_l2e_vectors(tmp_path):
    """sparse -> SparseEncoder (l2e's LexicalWeights module, trust_remote_code), splade -> SparseEncoder
    (built-in SpladePooling), colbert -> MultiVectorEncoder (built-in): the same vectors and scores as l2e."""
    from sentence_transformers import MultiVectorEncoder, SparseEncoder

    from l2e.model.heads import maxsim
    from l2e.retrieval.search import _padded

    path, _ = build(tmp_path, pooling_mode="mean", bi_attn_enabled=True, sparse_enabled=True, splade_enabled=True,
                    colbert_enabled=True, colbert_dim=16, query_instruction=INSTRUCTION)
    ours = Embedder.from_checkpoint(path)
    for head, sub, kwargs in [("sparse", "sparse_encoder", {"trust_remote_code": True}),
                              ("splade", "splade_encoder", {})]:
        st = SparseEncoder(f"{path}/{sub}", device="cpu", **kwargs)
        # One text per call: sentence-transformers' causal-LM path (SPLADE) pads on the left without position
        # ids, so in a padded batch its positions differ from l2e's (README, Serving).
        for text in QUERIES:
            theirs = st.encode([text], prompt_name="query", convert_to_tensor=True, convert_to_sparse_tensor=False)
            mine = ours.encode_reps([text], [head], instruction=INSTRUCTION)[head].toarray()
            np.testing.assert_allclose(theirs.numpy(), mine, atol=1e-5)
        for text in DOCS:
            theirs = st.encode([text], convert_to_tensor=True, convert_to_sparse_tensor=False)
            np.testing.assert_allclose(theirs.numpy(), ours.encode_reps([text], [head])[head].toarray(), atol=1e-5)
    mv = MultiVectorEncoder(f"{path}/multi_vector_encoder", device="cpu")
    q_st, d_st = mv.encode(QUERIES, prompt_name="query"), mv.encode(DOCS)
    q_ours = ours.encode_reps(QUERIES, ["colbert"], instruction=INSTRUCTION)["colbert"]
    d_ours = ours.encode_reps(DOCS, ["colbert"])["colbert"]
    for a, b in zip(q_st + d_st, q_ours + d_ours):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)
    (q, qm), (d, dm) = _padded(q_ours), _padded(d_ours)
    torch.testing.assert_close(mv.similarity(q_st, d_st), maxsim(q, qm, d, dm), atol=1e-5, rtol=1e-5)


def test_idf_lexical_head_exports_to_sparse_encoder_with_l2e_vectors(tmp_path):
    """sparse_idf: the idf travels with the exported head (LexicalWeights' token_idf), same vectors as l2e."""
    from sentence_transformers import SparseEncoder

    def prepare(model):
        head = model.heads["sparse"]
        head.start_from_idf(torch.rand(head.vocab_size, generator=torch.Generator().manual_seed(0)) * 5)
        with torch.no_grad():
            head.linear.weight.normal_(0, 0.1)  # a trained head: contextual factors besides the idf

    path, _ = build(tmp_path, prepare=prepare, pooling_mode="mean", bi_attn_enabled=True, sparse_enabled=True,
                    sparse_idf=True, query_instruction=INSTRUCTION)
    ours = Embedder.from_checkpoint(path)
    st = SparseEncoder(f"{path}/sparse_encoder", device="cpu", trust_remote_code=True)
    for text in QUERIES[:2]:
        theirs = st.encode([text], prompt_name="query", convert_to_tensor=True, convert_to_sparse_tensor=False)
        np.testing.assert_allclose(theirs.numpy(), ours.encode_reps([text], ["sparse"], instruction=INSTRUCTION)[
            "sparse"].toarray(), atol=1e-5)
    theirs = st.encode(DOCS[:2], convert_to_tensor=True, convert_to_sparse_tensor=False)
    np.testing.assert_allclose(theirs.numpy(), ours.encode_reps(DOCS[:2], ["sparse"])["sparse"].toarray(), atol=1e-5)
