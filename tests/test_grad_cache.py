"""GradCache gives the plain full-batch step's parameter gradients (tiny Qwen3, LoRA and full)."""
import contextlib

import pytest
import torch

from helpers_models import tiny_qwen3
from l2e.config import from_dict
from l2e.data.tokens import encode_texts, pad_batch
from l2e.losses import build_loss
from l2e.model.embedding_model import build_model
from l2e.train.grad_cache import grad_cache_step, split_rows

QUERIES = ["file archiver", "chess engine", "text editor", "web browser", "mail client", "pdf viewer"]
DOCS = ["7-Zip packs and unpacks archives in many formats.", "GNU chess plays chess.", "Vim edits text.",
        "Firefox browses the web.", "Thunderbird reads mail and news.", "Evince shows PDF documents."]


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fields", [dict(pooling_mode="eos"),
                                    dict(pooling_mode="mean", bi_attn_enabled=True, lora_enabled=True, lora_r=4,
                                         lora_dropout=0.0, mrl_enabled=True, mrl_dims=[16], mrl_dim_weights=[0.5],
                                         spread_enabled=True)])
def test_grad_cache_equals_plain_step(fields):
    cfg = from_dict({"model_path": tiny_qwen3(), **fields}, check_paths=False)
    torch.manual_seed(0)
    model, tok = build_model(cfg)
    model.train()
    loss_fn = build_loss(cfg)
    q = pad_batch(*encode_texts(tok, QUERIES, 32, instruction="Query: ")[:1], tok.pad_token_id)
    p = pad_batch(encode_texts(tok, DOCS, 32)[0], tok.pad_token_id)
    keys = torch.arange(len(QUERIES))

    def loss_of(reps):
        return loss_fn(reps[0], reps[1], None, pos_keys=keys)

    plain = loss_of([model(**q), model(**p)])
    plain["loss"].backward()
    expected = grads(model)
    model.zero_grad(set_to_none=True)
    cached = grad_cache_step(lambda g: model(**g), [q, p], loss_of, chunk_size=2,
                             backward=lambda loss: loss.backward(), no_sync=contextlib.nullcontext)
    assert cached["loss"].item() == pytest.approx(plain["loss"].item(), abs=1e-5)
    got = grads(model)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_split_rows_trims_each_chunk_to_its_longest():
    batch = pad_batch([[1, 2, 3, 4], [1], [1, 2]], pad_id=0)
    chunks = split_rows(batch, 2)
    assert [c["input_ids"].shape for c in chunks] == [(2, 4), (1, 2)]
    assert chunks[1]["input_ids"].tolist() == [[1, 2]]
