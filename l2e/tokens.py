"""Text → token ids, the one place both ``tokenize_data.py`` (training) and the Embedder (inference) use.

Why one function: an embedding model is only as good as the agreement between how it was trained and how
it is queried. Decoder LLMs pool the EOS token (F2LLM, Qwen3-Embedding), so EOS is appended *after*
truncation and always survives it. An instruction prefix (``Instruct: …\\nQuery: ``) is tokenized together
with the text, as sentence-transformers prompts are, and its length recorded so skip-instruction pooling
can exclude it. Encoder models (BERT/MiniLM) instead get their own special tokens ([CLS] … [SEP]).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch


def is_decoder_tokenizer(tokenizer) -> bool:
    """A tokenizer without a CLS token belongs to a decoder LLM (append EOS ourselves)."""
    return getattr(tokenizer, "cls_token_id", None) is None


def encode_texts(
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    instruction: Optional[str] = None,
) -> Tuple[List[List[int]], List[int]]:
    """Tokenize ``instruction + text`` for each text into at most ``max_length`` ids.

    Returns ``(ids, instruction_lens)``; ``instruction_lens[i]`` leading tokens of ``ids[i]`` belong to the
    instruction (0 when there is none). The instruction and text are tokenized *together*, as
    sentence-transformers does with prompts, so an exported model gives the same ids; the instruction
    length is the common prefix with the instruction tokenized alone (a trailing space, as in ``Query: ``,
    merges into the first word and then counts as text). Decoder tokenizers: no special tokens from the
    tokenizer, EOS appended last and kept after truncation. Encoder tokenizers: ``[CLS] … [SEP]``.
    """
    texts = list(texts)
    if not texts:
        return [], []
    decoder = is_decoder_tokenizer(tokenizer)
    if decoder:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos_token; set one before tokenizing")
        head, tail = [], [tokenizer.eos_token_id]
    else:
        head, tail = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
    prefix = instruction or ""
    inst_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    budget = max_length - len(head) - len(tail)
    if budget <= len(inst_ids):
        raise ValueError(
            f"max_length={max_length} leaves no room for text after the instruction "
            f"({len(inst_ids)} tokens); raise max_length or shorten the instruction"
        )
    bodies = tokenizer([prefix + t for t in texts], add_special_tokens=False)["input_ids"]
    ids, inst_lens = [], []
    for body in bodies:
        n = _common_prefix(inst_ids, body)
        ids.append(head + body[:budget] + tail)
        inst_lens.append(len(head) + n if n else 0)
    return ids, inst_lens


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pad_batch(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    instruction_lens: Optional[Sequence[int]] = None,
) -> dict:
    """Right-pad to the longest sequence in the batch (not to ``max_length``: padding is wasted compute).

    Returns ``input_ids`` and ``attention_mask`` (batch, seq) and ``pool_mask`` (batch, seq): the real
    tokens that pooling may use, i.e. the attention mask with the instruction prefix switched off.
    """
    n = len(seqs)
    width = max(len(s) for s in seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        attention_mask[i, : len(s)] = 1
    pool_mask = attention_mask.clone()
    if instruction_lens is not None:
        for i, k in enumerate(instruction_lens):
            # Keep at least the last token so a text that is all instruction still has an embedding.
            pool_mask[i, : min(int(k), len(seqs[i]) - 1)] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pool_mask": pool_mask}
