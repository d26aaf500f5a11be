"""Serving: the engines' config fields, the ONNX export run by ONNX Runtime with l2e's vectors, int8, the card."""
import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from helpers_models import tiny_config
from l2e.export.final import export_final
from l2e.export.onnx_export import OnnxError, export_onnx, quantize_int8
from l2e.model.embedding_model import build_model
from l2e.retrieval.embedder import Embedder

INSTRUCTION = "Instruct: Given a package summary, retrieve its description\nQuery:"
QUERIES = ["7-Zip file archiver", "GNU chess engine with a much longer query than the first"]
DOCS = ["7-Zip is a file archiver with a high compression ratio.", "Gnuchess plays chess."]


def export(tmp_path, **fields):
    cfg = tiny_config("qwen3", max_seq_length=64, query_instruction=INSTRUCTION, **fields)
    model, tok = build_model(cfg)
    return export_final(model, tok, str(tmp_path / "final"), training_config=cfg,
                        run={"steps": 3, "samples": 24, "steps_time_s": 60.0,
                             "validation": [{"step": 3, "train_s": 1.0, "ndcg_at_10": 0.5}]})


def test_engine_fields_and_no_chat_template(tmp_path):
    bi = export(tmp_path / "bi", pooling_mode="mean", bi_attn_enabled=True)
    config = json.loads(open(os.path.join(bi, "config.json")).read())
    assert config["is_causal"] is False and config["use_bidirectional_attention"] is True
    assert not os.path.exists(os.path.join(bi, "chat_template.jinja"))
    causal = export(tmp_path / "causal", pooling_mode="eos")
    config = json.loads(open(os.path.join(causal, "config.json")).read())
    assert "use_bidirectional_attention" not in config and config.get("is_causal", True) is not False
    pooling = json.loads(open(os.path.join(bi, "1_Pooling", "config.json")).read())
    assert pooling["pooling_mode_mean_tokens"] is True  # the legacy keys text-embeddings-inference parses


def test_model_card_names_the_base_components_prompts_and_engines(tmp_path):
    final = export(tmp_path, pooling_mode="mean", bi_attn_enabled=True, skip_instruction=True, lora_enabled=True,
                   mrl_enabled=True, mrl_dims=[16, 32], mrl_dim_weights=[1.0, 1.0])
    card = open(os.path.join(final, "README.md")).read()
    for part in ["## Model details", "bidirectional", "mean, instruction tokens left out", "LoRA", "Matryoshka",
                 "dims [16, 32]", "3 x batch 16", json.dumps(INSTRUCTION), "SentenceTransformer(", "vllm serve",
                 "text-embeddings-router", "skip-instruction is not served", "| 3 | 0.5000 |"]:
        assert part in card, part


@pytest.mark.parametrize("fields", [
    dict(pooling_mode="mean", bi_attn_enabled=True, skip_instruction=True),
    dict(pooling_mode="eos"),
    dict(pooling_mode="weighted_mean", bi_attn_enabled=True),
], ids=["bi-mean-skip", "causal-eos", "bi-weighted-mean"])
def test_onnx_runtime_gives_l2e_vectors(tmp_path, fields):
    final = export(tmp_path, **fields)
    path = export_onnx(final)
    ours, onnx = Embedder.from_checkpoint(final), Embedder.from_onnx(final)
    np.testing.assert_allclose(onnx.encode_queries(QUERIES), ours.encode_queries(QUERIES), atol=1e-4)
    np.testing.assert_allclose(onnx.encode_corpus(DOCS, batch_size=1), ours.encode_corpus(DOCS), atol=1e-4)
    # The graph's own sentence_embedding (what an engine reads) equals l2e's document vectors.
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    from l2e.data.tokens import encode_texts, pad_batch

    ids, _ = encode_texts(ours.tokenizer, DOCS, 64)
    batch = pad_batch(ids, ours.tokenizer.pad_token_id)
    _, pooled = session.run(None, {"input_ids": batch["input_ids"].numpy(),
                                   "attention_mask": batch["attention_mask"].numpy()})
    np.testing.assert_allclose(pooled, ours.encode_corpus(DOCS), atol=1e-4)


def test_onnx_keeps_bidirectional_attention_and_int8_stays_close(tmp_path):
    final = export(tmp_path, pooling_mode="mean", bi_attn_enabled=True)
    path = export_onnx(final)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    a, b = np.array([[5, 6, 7, 8]]), np.array([[5, 6, 7, 9]])
    mask = np.ones_like(a)
    first = lambda ids: session.run(None, {"input_ids": ids, "attention_mask": mask})[0][0, 0]  # noqa: E731
    assert np.abs(first(a) - first(b)).max() > 1e-4  # a later token changed the first token's state
    int8 = quantize_int8(path)
    assert os.path.getsize(int8) < 0.5 * os.path.getsize(path)
    fp32, q = Embedder.from_onnx(final), Embedder.from_onnx(final, "onnx/model_qint8.onnx")
    cos = (fp32.encode_corpus(DOCS) * q.encode_corpus(DOCS)).sum(axis=1)
    assert cos.min() > 0.95


def test_onnx_errors_are_one_line(tmp_path, capsys):
    from l2e.export.onnx_export import main

    final = export(tmp_path, pooling_mode="mean")
    with pytest.raises(OnnxError, match="not found; export it first"):
        Embedder.from_onnx(final)
    assert main(["--ckpt_dir", str(tmp_path)]) == 2
    assert "not an l2e checkpoint" in capsys.readouterr().err


def test_export_targets_registry_writes_onnx_from_the_merged_model(tmp_path):
    """The ONNX export as a named target of export_final: a LoRA model is merged once and the graph, traced from
    the plain weights just written, gives l2e's vectors; a bad target list is refused before anything is written."""
    from l2e.export.final import DEFAULT_TARGETS, EXPORT_TARGETS

    assert set(DEFAULT_TARGETS) < set(EXPORT_TARGETS) and "onnx" in EXPORT_TARGETS
    cfg = tiny_config("qwen3", max_seq_length=64, pooling_mode="mean", bi_attn_enabled=True, lora_enabled=True,
                      query_instruction=INSTRUCTION)
    model, tok = build_model(cfg)
    with pytest.raises(ValueError, match="start with 'hf'"):
        export_final(model, tok, str(tmp_path / "bad"), targets=("onnx",))
    with pytest.raises(ValueError, match="then any of hf, sentence-transformers"):
        export_final(model, tok, str(tmp_path / "bad"), targets=("hf", "tflite"))
    assert not os.path.exists(tmp_path / "bad") and model.is_adapter
    final = export_final(model, tok, str(tmp_path / "run" / "final"), targets=(*DEFAULT_TARGETS, "onnx"))
    assert os.path.isfile(os.path.join(final, "onnx", "model.onnx")) and not model.is_adapter
    assert os.path.isfile(tmp_path / "run" / "final_adapter" / "adapter_config.json")
    ours, onnx = Embedder.from_checkpoint(final), Embedder.from_onnx(final)
    np.testing.assert_allclose(onnx.encode_queries(QUERIES), ours.encode_queries(QUERIES), atol=1e-4)
