"""Poolings as pure functions: exact hand-computed numbers, right and left padding, skip-instruction."""
import math

import pytest
import torch
from l2e.config import POOLING_MODES
from l2e.model.pooling import POOLING, get_pooling, last_token_index

NAN = math.nan
# Row 0 is right-padded, row 1 left-padded; padded positions hold NaN (what fully masked attention rows can
# produce), so any pooling that lets padding leak in fails loudly.
HIDDEN = torch.tensor([
    [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [NAN, NAN]],
    [[NAN, NAN], [2.0, 0.0], [4.0, 0.0], [9.0, 3.0]],
])  # (batch=2, seq=4, hidden=2)
MASK = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
# Instruction = first real token of each row.
POOL = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])


def pool(name, pool_mask=None):
    return get_pooling(name)(HIDDEN, MASK, pool_mask)


def test_registry_matches_config_choices():
    from l2e.model.attention_pooling import POOLERS

    assert sorted([*POOLING, *POOLERS]) == sorted(POOLING_MODES)


def test_unknown_pooling_lists_valid_names():
    with pytest.raises(KeyError, match="unknown pooling 'max'; valid: cls, eos, last, mean, weighted_mean"):
        get_pooling("max")


@pytest.mark.parametrize("name", ["eos", "last"])
def test_last_token_both_padding_sides(name):
    torch.testing.assert_close(pool(name), torch.tensor([[5.0, 6.0], [9.0, 3.0]]))


def test_last_token_index_never_uses_token_ids():
    # Right padding, left padding, no padding, a single real token.
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_token_index(mask).tolist() == [1, 3, 3, 3]


def test_cls_is_first_real_token():
    torch.testing.assert_close(pool("cls"), torch.tensor([[1.0, 2.0], [2.0, 0.0]]))


def test_mean():
    torch.testing.assert_close(pool("mean"), torch.tensor([[3.0, 4.0], [5.0, 1.0]]))


def test_weighted_mean_sgpt_weights():
    # weights 1, 2, 3 over the real tokens: row 0 (1*1 + 2*3 + 3*5) / 6, (1*2 + 2*4 + 3*6) / 6
    expected = torch.tensor([[22 / 6, 28 / 6], [37 / 6, 9 / 6]])
    torch.testing.assert_close(pool("weighted_mean"), expected)


def test_mean_skips_instruction():
    torch.testing.assert_close(pool("mean", POOL), torch.tensor([[4.0, 5.0], [6.5, 1.5]]))


def test_weighted_mean_keeps_absolute_positions_after_instruction():
    # SGPT weighs a token by its position among the real tokens; the instruction token (position 1) is left
    # out but does not renumber the rest: row 0 (2*[3, 4] + 3*[5, 6]) / 5, row 1 (2*[4, 0] + 3*[9, 3]) / 5.
    expected = torch.tensor([[21 / 5, 26 / 5], [35 / 5, 9 / 5]])
    torch.testing.assert_close(pool("weighted_mean", POOL), expected)


def test_weighted_mean_equals_sentence_transformers_pooling():
    """The peer's Pooling(weightedmean, include_prompt=False) on the same states: same numbers."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    hidden = HIDDEN.nan_to_num()[:1]  # sentence-transformers multiplies by the mask: no NaN padding there
    st = Pooling(2, pooling_mode="weightedmean", include_prompt=False)
    out = st({"token_embeddings": hidden, "attention_mask": MASK[:1], "prompt_length": 1})["sentence_embedding"]
    torch.testing.assert_close(get_pooling("weighted_mean")(hidden, MASK[:1], POOL[:1]), out)


@pytest.mark.parametrize("name", ["eos", "last"])
def test_token_poolings_ignore_pool_mask(name):
    torch.testing.assert_close(pool(name, POOL), pool(name))


def test_cls_skips_the_instruction():
    """Skip-instruction promises the text's first token: the one after the instruction (as sentence-transformers'
    Pooling(cls, include_prompt=False) takes), for right and left padding."""
    torch.testing.assert_close(pool("cls"), torch.tensor([[1.0, 2.0], [2.0, 0.0]]))
    torch.testing.assert_close(pool("cls", POOL), torch.tensor([[3.0, 4.0], [4.0, 0.0]]))


def test_cls_text_without_tokens_after_its_instruction_takes_the_first_token():
    everything_instruction = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]])
    torch.testing.assert_close(pool("cls", everything_instruction), torch.tensor([[1.0, 2.0], [4.0, 0.0]]))


def test_bf16_hidden_pools_in_float32():
    out = get_pooling("mean")(HIDDEN.nan_to_num().bfloat16(), MASK, None)
    assert out.dtype == torch.float32
