"""Proof that ``config.is_causal = False`` really removes the causal mask, per architecture and kernel."""
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModel, MistralConfig, Qwen2Config

from helpers_models import TINY_MODELS
from l2e.core.errors import ModelError
from l2e.model.bidirectional import BIDIRECTIONAL, is_bidirectional, set_bidirectional

ARCHS = ["qwen3", "deepseek_v3", "llama"]
IMPLS = ["sdpa", "eager"]
PAD = 2
LONG = [30, 31, 32, 33, 34, 35, 36]
ROW = [20, 21, 22, 23]  # the row under test; its last token gets changed
CHANGED = [20, 21, 22, 99]
LAYOUTS = ["single", "right_pad", "left_pad"]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(arch, impl):
        if (arch, impl) not in cache:
            model = AutoModel.from_pretrained(TINY_MODELS[arch](), attn_implementation=impl, dtype=torch.float32)
            cache[arch, impl] = model.eval()
        return cache[arch, impl]

    return get


def batch(row, layout, pad_id=PAD):
    """(input_ids, attention_mask, index of ``row``'s first real token, its row index)."""
    if layout == "single":
        return torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), 0, 0
    n_pad = len(LONG) - len(row)
    padded, mask = row + [pad_id] * n_pad, [1] * len(row) + [0] * n_pad
    if layout == "left_pad":
        padded, mask = padded[::-1][: n_pad] + row, [0] * n_pad + [1] * len(row)
    first = n_pad if layout == "left_pad" else 0
    return torch.tensor([LONG, padded]), torch.tensor([[1] * len(LONG), mask]), first, 1


@torch.no_grad()
def states(model, ids, mask):
    # The same position ids EmbeddingModel uses: counted over real tokens, so padding side does not matter.
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state


def real_states(model, row, layout, pad_id=PAD):
    ids, mask, first, r = batch(row, layout, pad_id)
    return states(model, ids, mask)[r, first : first + len(row)]  # (len(row), hidden)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arch", ARCHS)
def test_later_token_reaches_earlier_only_when_bidirectional(models, arch, impl, layout):
    model = models(arch, impl)
    for enabled in (True, False):
        set_bidirectional(model, enabled)
        assert is_bidirectional(model) == enabled
        before, after = real_states(model, ROW, layout), real_states(model, CHANGED, layout)
        first_token_moved = (before[0] - after[0]).abs().max().item()
        if enabled:
            assert first_token_moved > 1e-3
        else:
            assert first_token_moved < 1e-6
        assert (before[-1] - after[-1]).abs().max().item() > 1e-3  # the changed token itself always moves
    set_bidirectional(model, False)


@pytest.mark.parametrize("layout", ["right_pad", "left_pad"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arch", ARCHS)
def test_padding_never_changes_real_tokens(models, arch, impl, layout):
    model = models(arch, impl)
    for enabled in (True, False):
        set_bidirectional(model, enabled)
        alone = real_states(model, ROW, "single")
        torch.testing.assert_close(real_states(model, ROW, layout), alone, atol=2e-5, rtol=1e-4)
        # Another pad id must not matter either: padding is found by the mask, never by token id.
        torch.testing.assert_close(real_states(model, ROW, layout, pad_id=77), alone, atol=2e-5, rtol=1e-4)
    set_bidirectional(model, False)


@pytest.mark.parametrize("arch", ARCHS)
def test_flag_survives_save_and_load(models, arch, tmp_path):
    model = models(arch, "sdpa")
    set_bidirectional(model, True)
    expected = real_states(model, ROW, "single")
    model.save_pretrained(tmp_path)
    set_bidirectional(model, False)
    reloaded = AutoModel.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.config.is_causal is False and is_bidirectional(reloaded)
    torch.testing.assert_close(real_states(reloaded, ROW, "single"), expected)


@pytest.mark.parametrize("config_cls", [Qwen2Config, MistralConfig])
def test_other_registered_architectures_become_bidirectional(config_cls):
    torch.manual_seed(0)
    config = config_cls(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)
    model = AutoModel.from_config(config, attn_implementation="sdpa").eval()
    assert config.model_type in BIDIRECTIONAL
    moved = {}
    for enabled in (True, False):
        set_bidirectional(model, enabled)
        before, after = real_states(model, ROW, "right_pad"), real_states(model, CHANGED, "right_pad")
        moved[enabled] = (before[0] - after[0]).abs().max().item()
    assert moved[True] > 1e-3 and moved[False] < 1e-6


def test_supported_architectures():
    assert sorted(BIDIRECTIONAL) == ["deepseek_v3", "llama", "mistral", "qwen2", "qwen3"]


def test_unsupported_architecture_error_lists_supported():
    model = SimpleNamespace(config=SimpleNamespace(model_type="gpt2", is_causal=True))
    with pytest.raises(ModelError, match=r"model_type 'gpt2'; supported: deepseek_v3, llama, mistral, qwen2, qwen3"):
        set_bidirectional(model, True)
    set_bidirectional(model, False)  # switching off is a no-op for anything (encoders are bidirectional anyway)
    assert model.config.is_causal is True and not is_bidirectional(model)
