"""Trainable poolings: attention starts as mean pooling, latent attention ignores padding, both reload
bit-identically and export to sentence-transformers with l2e's vectors."""
import numpy as np
import pytest
import torch

from helpers_models import tiny_config
from l2e.data.tokens import encode_texts, pad_batch
from l2e.export.final import export_final
from l2e.model.attention_pooling import AttentionPooling, LatentAttentionPooling, masked_mean
from l2e.model.embedding_model import build_model, load_embedding_model
from l2e.retrieval.embedder import Embedder

NAN = float("nan")
HIDDEN = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [NAN, NAN]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
KEEP = torch.tensor([[1, 1, 0], [0, 1, 1]])


def test_attention_pooling_starts_as_the_masked_mean():
    pooled = AttentionPooling(2)(HIDDEN, KEEP)
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 3.0], [8.0, 9.0]]))
    torch.testing.assert_close(masked_mean(HIDDEN, KEEP), pooled)


def test_attention_pooling_weights_by_hand():
    pool = AttentionPooling(2)
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([[1.0, 0.0]]))  # score = first coordinate
    # Row 0: scores 1, 3 -> weights 1/(1+e^2), e^2/(1+e^2).
    w = torch.tensor([1.0, np.exp(2.0)]) / (1 + np.exp(2.0))
    expected = w[0] * torch.tensor([1.0, 2.0]) + w[1] * torch.tensor([3.0, 4.0])
    torch.testing.assert_close(pool(HIDDEN, KEEP)[0], expected.float())


def test_latent_attention_ignores_what_it_may_not_pool():
    torch.manual_seed(0)
    pool = LatentAttentionPooling(2, latent_num=3, latent_heads=2, latent_head_dim=4)
    out = pool(HIDDEN, KEEP)
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    changed = HIDDEN.clone()
    changed[1, 0] = 1000.0  # not kept: only its own position changes, and it is left out of the mean
    torch.testing.assert_close(pool(changed, KEEP), out)


@pytest.mark.parametrize("mode", ["attention", "latent_attention"])
def test_trainable_pooling_trains_reloads_and_exports(tmp_path, mode):
    from sentence_transformers import SentenceTransformer

    cfg = tiny_config("qwen3", pooling_mode=mode, bi_attn_enabled=True, skip_instruction=True, max_seq_length=64,
                      latent_num=8, latent_heads=2, latent_head_dim=8, query_instruction="Instruct: find\nQuery:")
    model, tok = build_model(cfg)
    with torch.no_grad():
        for p in model.pooler.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # away from the initial state: the weights must travel
    ids, lens = encode_texts(tok, ["apple pie", "a much longer text about bikes"], 32, "Instruct: find\nQuery:")
    batch = pad_batch(ids, tok.pad_token_id, lens)
    model.train()(**batch).sum().backward()
    assert all(p.grad is not None for p in model.pooler.parameters())
    model.eval()
    with torch.no_grad():
        expected = model(**batch)
    model.save(str(tmp_path / "ckpt"), tok)
    loaded, _ = load_embedding_model(str(tmp_path / "ckpt"))
    with torch.no_grad():
        assert torch.equal(loaded(**batch), expected)  # bit-identical after reload
    final = export_final(model, tok, str(tmp_path / "final"))
    st = SentenceTransformer(final, device="cpu", trust_remote_code=True)
    texts = ["apple pie", "bike repair"]
    np.testing.assert_allclose(st.encode(texts, prompt_name="query", normalize_embeddings=True),
                               Embedder.from_checkpoint(final).encode_queries(texts), atol=1e-5)
