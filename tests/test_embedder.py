"""Embedder: same tokenization as training, order kept, unit norms, Matryoshka dims, constructors."""
import json
import shutil

import numpy as np
import pytest
import torch

from helpers_models import TINY_MODELS, tiny_config
from l2e.core.errors import L2EError
from l2e.data.tokens import encode_texts, pad_batch
from l2e.model.embedding_model import build_model
from l2e.retrieval.embedder import Embedder

INSTRUCTION = "Instruct: retrieve passages\nQuery: "
TEXTS = ["a long text about rotary position embeddings and their many uses", "short", "a middle one here"]


@pytest.fixture(scope="module")
def built():
    return build_model(tiny_config("qwen3", pooling_mode="mean", bi_attn_enabled=True))


@pytest.fixture
def embedder(built):
    model, tokenizer = built
    model.settings = model.settings.replace(skip_instruction=False)
    return Embedder(model, tokenizer, query_instruction=INSTRUCTION, max_length=64, device="cpu")


def norms(x):
    return np.linalg.norm(x, axis=1)


def test_encode_equals_normalised_model_output(embedder, built):
    model, tokenizer = built
    out = embedder.encode(TEXTS)
    assert out.shape == (3, 64) and out.dtype == np.float32
    np.testing.assert_allclose(norms(out), 1.0, atol=1e-6)
    ids, lens = encode_texts(tokenizer, TEXTS, 64)
    batch = pad_batch(ids, tokenizer.pad_token_id, lens)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(**batch), dim=-1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_bf16_encode_enters_autocast_once_per_call(built, monkeypatch):
    """autocast keeps its bf16 copies of the weights only while its context is open: a context per batch cast every
    weight again for each batch (MiniLM's bf16 encode 13% slower). One context per call, fp32 unit vectors out."""
    import l2e.retrieval.embedder as module

    model, tokenizer = built
    entered, real = [], module.autocast
    monkeypatch.setattr(module, "autocast", lambda *a: entered.append(a) or real(*a))
    bf16 = Embedder(model, tokenizer, max_length=64, device="cpu", precision="bf16")
    out = bf16.encode(TEXTS, batch_size=1)  # three batches
    assert len(entered) == 1 and entered[0][0].bf16
    assert out.dtype == np.float32
    np.testing.assert_allclose(norms(out), 1.0, atol=1e-5)
    fp32 = Embedder(model, tokenizer, max_length=64, device="cpu").encode(TEXTS)
    assert np.abs(out - fp32).max() < 0.05  # bf16 matmuls, same vectors to bf16's precision


def test_sorting_by_length_keeps_input_order(embedder):
    one_by_one = np.stack([embedder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(embedder.encode(TEXTS, batch_size=2), one_by_one, atol=1e-5)


def test_matryoshka_dim_truncates_then_renormalises(embedder):
    out = embedder.encode(TEXTS, dim=16)
    assert out.shape == (3, 16)
    np.testing.assert_allclose(norms(out), 1.0, atol=1e-6)
    ids, lens = encode_texts(embedder.tokenizer, TEXTS, 64)
    with torch.no_grad():
        raw = embedder.model(**pad_batch(ids, embedder.tokenizer.pad_token_id, lens))[:, :16]
    np.testing.assert_allclose(out, torch.nn.functional.normalize(raw, dim=-1).numpy(), atol=1e-5)


@pytest.mark.parametrize("dim", [0, 65])
def test_bad_dim_is_an_error(embedder, dim):
    with pytest.raises(ValueError, match=f"dim={dim} must be between 1 and the model's hidden size 64"):
        embedder.encode(TEXTS, dim=dim)


def test_queries_carry_the_instruction_and_corpus_does_not(embedder):
    queries, corpus = embedder.encode_queries(TEXTS), embedder.encode_corpus(TEXTS)
    np.testing.assert_allclose(queries, embedder.encode(TEXTS, instruction=INSTRUCTION), atol=1e-6)
    np.testing.assert_allclose(corpus, embedder.encode(TEXTS), atol=1e-6)
    assert np.abs(queries - corpus).max() > 1e-3


def test_skip_instruction_reaches_pooling(embedder):
    with_instruction, plain = embedder.encode(TEXTS, instruction=INSTRUCTION), embedder.encode(TEXTS)
    embedder.model.settings = embedder.model.settings.replace(skip_instruction=True)
    assert np.abs(embedder.encode(TEXTS, instruction=INSTRUCTION) - with_instruction).max() > 1e-3
    # Without an instruction the pool mask is the attention mask: nothing changes.
    np.testing.assert_allclose(embedder.encode(TEXTS), plain, atol=1e-6)


def test_max_length_truncates_keeping_eos(embedder):
    # "a b c d e f g" is one token per letter; 4 = three text tokens + EOS.
    np.testing.assert_allclose(embedder.encode(["a b c d e f g"], max_length=4), embedder.encode(["a b c"]),
                               atol=1e-6)


def test_empty_input_and_progress_bar(embedder):
    assert embedder.encode([]).shape == (0, 64)
    assert embedder.encode(TEXTS, show_progress=True).shape == (3, 64)


@pytest.mark.parametrize("lora", [False, True])
def test_from_checkpoint_restores_settings_and_outputs(tmp_path, lora):
    cfg = tiny_config("llama", pooling_mode="weighted_mean", skip_instruction=True, query_instruction=INSTRUCTION,
                      query_max_length=16, passage_max_length=48, lora_enabled=lora, bi_attn_enabled=True)
    model, tokenizer = build_model(cfg)
    with torch.no_grad():  # a fresh adapter is the identity (B = 0); make it matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    original = Embedder(model, tokenizer, INSTRUCTION, max_length=48, query_max_length=48)
    model.save(str(tmp_path), tokenizer)
    restored = Embedder.from_checkpoint(str(tmp_path))
    assert restored.query_instruction == INSTRUCTION
    # The training caps are kept; inference cuts both sides at the longer one, as the exports do.
    assert (restored.model.settings.query_max_length, restored.model.settings.passage_max_length) == (16, 48)
    assert (restored.max_length, restored.query_max_length) == (48, 48)
    assert restored.model.skip_instruction and restored.model.pooling_mode == "weighted_mean"
    assert restored.model.is_adapter == lora
    np.testing.assert_allclose(restored.encode_queries(TEXTS), original.encode_queries(TEXTS), atol=1e-5)
    overridden = Embedder.from_checkpoint(str(tmp_path), pooling_mode="eos")
    assert overridden.model.pooling_mode == "eos"


def test_from_pretrained_plain_folder():
    decoder = Embedder.from_pretrained(TINY_MODELS["qwen3"]())
    assert decoder.model.pooling_mode == "eos" and decoder.max_length == 512
    assert decoder.model.settings.base_model_path == TINY_MODELS["qwen3"]()
    assert decoder.model.backbone.config.is_causal is not False
    bi = Embedder.from_pretrained(TINY_MODELS["qwen3"](), pooling="mean", bi_attn=True, max_length=32)
    assert bi.model.pooling_mode == "mean" and bi.max_length == 32 and bi.model.backbone.config.is_causal is False
    assert np.abs(bi.encode(TEXTS) - decoder.encode(TEXTS)).max() > 1e-3


def make_st_folder(tmp_path, pooling_flags):
    """A sentence-transformers layout around a tiny model: modules.json, 1_Pooling/config.json."""
    folder = tmp_path / "st"
    shutil.copytree(TINY_MODELS["llama"](), folder)
    (folder / "1_Pooling").mkdir()
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    flags = {"word_embedding_dimension": 64, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
             "pooling_mode_max_tokens": False, "pooling_mode_lasttoken": False, **pooling_flags}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    return str(folder)


def test_from_pretrained_reads_sentence_transformers_pooling(tmp_path):
    emb = Embedder.from_pretrained(make_st_folder(tmp_path, {"pooling_mode_cls_token": True}))
    assert emb.model.pooling_mode == "cls" and emb.max_length == 128


def test_unsupported_sentence_transformers_pooling_is_an_error(tmp_path):
    folder = make_st_folder(tmp_path, {"pooling_mode_max_tokens": True})
    with pytest.raises(L2EError, match=r"sentence-transformers pooling \['pooling_mode_max_tokens'\] is not "
                       r"supported.*or pass pooling=\.\.\. explicitly"):
        Embedder.from_pretrained(folder)
    assert Embedder.from_pretrained(folder, pooling="mean").model.pooling_mode == "mean"


def test_encode_restores_training_mode(embedder):
    embedder.model.train()
    before = embedder.encode(TEXTS[:1])  # dropout is off while encoding (eval mode inside)
    assert embedder.model.training
    embedder.model.eval()
    np.testing.assert_allclose(embedder.encode(TEXTS[:1]), before, atol=1e-6)
    assert not embedder.model.training


def test_inline_instruction_is_skipped_like_a_separate_one(tmp_path):
    """instruction_separator: a query that carries its instruction inline pools like instruction + text."""
    cfg = tiny_config("qwen3", pooling_mode="mean", bi_attn_enabled=True, skip_instruction=True,
                      instruction_separator="Query:")
    model, tokenizer = build_model(cfg)
    emb = Embedder(model, tokenizer, device="cpu")
    inline = [f"Instruct: retrieve passages\nQuery: {t}" for t in TEXTS]
    separate = emb.encode([" " + t for t in TEXTS], instruction="Instruct: retrieve passages\nQuery:")
    np.testing.assert_allclose(emb.encode_queries(inline), separate, atol=1e-6)
    # Documents are never split; without skip_instruction the split changes nothing either.
    assert np.abs(emb.encode_corpus(inline) - separate).max() > 1e-3
    model.settings = model.settings.replace(skip_instruction=False)
    np.testing.assert_allclose(emb.encode_queries(inline), emb.encode_corpus(inline), atol=1e-6)


def test_compiled_encode_matches_eager_with_one_graph_for_every_shape(built):
    """compile=True (inductor, frozen weights, dynamic shapes): eager's vectors, and batches of other lengths reuse the
    one graph rather than compiling again (a compile per shape would cost minutes per batch on a real model)."""
    from torch._dynamo.utils import counters

    model, tokenizer = built
    texts = TEXTS + ["one more text of yet another length, to make a second batch"]
    eager = Embedder(model, tokenizer, max_length=64, device="cpu").encode(texts, batch_size=2)
    torch._dynamo.reset()
    counters.clear()
    compiled = Embedder(model, tokenizer, max_length=64, device="cpu", compile=True)
    assert compiled.compiled and compiled._forward is not compiled.model
    out = compiled.encode(texts, batch_size=2)  # two batches, padded to different lengths
    np.testing.assert_allclose(out, eager, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
    new = ["short", "two words"]  # a length no batch had
    np.testing.assert_allclose(compiled.encode(new), Embedder(model, tokenizer, max_length=64).encode(new), atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1


def test_compile_errors_name_the_fix(built, monkeypatch):
    import shutil

    model, tokenizer = built

    class NoWeights(torch.nn.Module):  # what an ONNX Runtime model looks like to the Embedder
        settings = model.settings
        hidden_size = model.hidden_size

    with pytest.raises(L2EError, match="needs a torch model"):
        Embedder(NoWeights(), tokenizer, device="cpu", compile=True)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(L2EError, match="needs a C\\+\\+ compiler"):
        Embedder(model, tokenizer, device="cpu", compile=True)
