"""The final folder loads in transformers.AutoModel and sentence-transformers with l2e's vectors."""
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from helpers_models import tiny_llama, tiny_qwen3
from l2e.config import from_dict
from l2e.embedder import Embedder
from l2e.export import export_final
from l2e.model import build_model

QUERIES = ["7-Zip file archiver with a high compression ratio", "x", "GNU chess engine"]
DOCS = ["7-Zip is a file archiver with a high compression ratio. It supports many formats.",
        "Gnuchess is an updated version of the GNU chess playing program."]
CASES = {
    # eos ignores skip-instruction; the instruction ends in a space that merges into the first word
    "eos": dict(pooling_mode="eos", query_instruction="Instruct: Given a package summary, retrieve its description\nQuery: "),
    "bi_mean_skip": dict(pooling_mode="mean", bi_attn_enabled=True, skip_instruction=True,
                         query_instruction="Instruct: Given a package summary, retrieve its description\nQuery:"),
    "weighted_mean": dict(pooling_mode="weighted_mean", query_instruction="Query:"),
    "lora_merged": dict(pooling_mode="mean", bi_attn_enabled=True, lora_enabled=True, lora_r=4, lora_alpha=8),
}


def build(tmp_path, **fields):
    cfg = from_dict({"model_path": tiny_qwen3(), "max_seq_length": 64, **fields}, check_paths=False)
    model, tok = build_model(cfg)
    if cfg.lora_enabled:  # make the adapter non-zero so merging matters
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    return export_final(model, tok, cfg, str(tmp_path / "final")), cfg


@pytest.mark.parametrize("case", sorted(CASES))
def test_sentence_transformers_gives_l2e_vectors(tmp_path, case):
    path, cfg = build(tmp_path, **CASES[case])
    ours = Embedder.from_checkpoint(path)
    st = SentenceTransformer(path, device="cpu")
    q_st = st.encode(QUERIES, prompt_name="query", normalize_embeddings=True, convert_to_numpy=True)
    d_st = st.encode(DOCS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(q_st, ours.encode_queries(QUERIES), atol=1e-5)
    np.testing.assert_allclose(d_st, ours.encode_corpus(DOCS), atol=1e-5)


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


def test_llama_export_roundtrip(tmp_path):
    cfg = from_dict({"model_path": tiny_llama(), "max_seq_length": 64, "pooling_mode": "eos"}, check_paths=False)
    model, tok = build_model(cfg)
    path = export_final(model, tok, cfg, str(tmp_path / "final"))
    st = SentenceTransformer(path, device="cpu")
    np.testing.assert_allclose(st.encode(DOCS, normalize_embeddings=True), Embedder.from_checkpoint(path).encode(DOCS),
                               atol=1e-5)
