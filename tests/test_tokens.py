"""Text → ids: the instruction length is sentence-transformers' prompt length; inline instructions."""
import pytest
from transformers import AutoTokenizer

from helpers_models import TOKENIZER_DIR
from l2e.data.tokens import encode_inline, encode_texts, split_inline_instruction, tokenizer_fingerprint


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.mark.parametrize("instruction", ["Instruct: find the passage\nQuery:", "Instruct: find the passage\nQuery: "])
def test_instruction_length_is_the_instruction_tokenized_alone(tokenizer, instruction):
    ids, lens = encode_texts(tokenizer, ["what is rope?", "x"], 64, instruction=instruction)
    alone = tokenizer(instruction, add_special_tokens=False)["input_ids"]
    assert lens == [len(alone), len(alone)]
    together = tokenizer(instruction + "what is rope?", add_special_tokens=False)["input_ids"]
    assert ids[0] == together + [tokenizer.eos_token_id]  # one string, as sentence-transformers tokenizes it


def test_trailing_space_merges_into_the_first_word(tokenizer):
    # The case where the common prefix and the alone-length differ: " what" is one token in context, so
    # the instruction (counted alone, with its trailing space token) covers the first word's token too.
    with_space = "Instruct: find the passage\nQuery: "
    ids, lens = encode_texts(tokenizer, ["what is rope?"], 64, instruction=with_space)
    prefix = tokenizer(with_space.rstrip(), add_special_tokens=False)["input_ids"]
    assert ids[0][:len(prefix)] == prefix and lens[0] == len(prefix) + 1
    assert tokenizer.decode(ids[0][lens[0]:-1]) == " is rope?"


def test_split_inline_instruction():
    assert split_inline_instruction("Instruct: x\nQuery: what", "Query:") == ("Instruct: x\nQuery:", " what")
    assert split_inline_instruction("Query: a Query: b", "Query:") == ("Query:", " a Query: b")  # first one
    assert split_inline_instruction("no marker", "Query:") == ("", "no marker")
    assert split_inline_instruction("Query: a", "") == ("", "Query: a")


def test_encode_inline_equals_separate_instruction(tokenizer):
    texts = ["Instruct: find it\nQuery: what is rope?", "plain text", "Instruct: other\nQuery:tail"]
    ids, lens = encode_inline(tokenizer, texts, 64, "Query:")
    for text, seq, n in zip(texts, ids, lens):
        inst, rest = split_inline_instruction(text, "Query:")
        want, want_len = encode_texts(tokenizer, [rest], 64, instruction=inst or None)
        assert seq == want[0] and n == want_len[0]
        assert seq == encode_texts(tokenizer, [text], 64)[0][0]  # same ids as the text given whole
    assert lens[1] == 0 and lens[0] > 0


def test_fingerprint_tells_tokenizers_apart(tokenizer, tmp_path):
    same = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(same)
    same.add_tokens(["<new_token>"])
    assert tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(same)
