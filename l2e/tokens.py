"""Text → token ids, the one place both ``tokenize_data.py`` (training) and the Embedder (inference) use.

Why one function: an embedding model is only as good as the agreement between how it was trained and how
it is queried. Decoder LLMs pool the EOS token (F2LLM, Qwen3-Embedding), so EOS is appended *after*
truncation and always survives it. An instruction prefix (``Instruct: …\\nQuery: ``) is tokenized on its
own and prepended, so its length in tokens is known exactly and skip-instruction pooling can exclude it.
Encoder models (BERT/MiniLM) instead get their own special tokens ([CLS] … [SEP]).
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
    """Tokenize ``texts`` (optionally prefixed by ``instruction``) into at most ``max_length`` ids each.

    Returns ``(ids, instruction_lens)``; ``instruction_lens[i]`` leading tokens of ``ids[i]`` are the
    instruction (0 when there is none). Decoder tokenizers: no special tokens from the tokenizer, EOS
    appended last and kept after truncation. Encoder tokenizers: ``[CLS] instruction text [SEP]``.
    """
    texts = list(texts)
    decoder = is_decoder_tokenizer(tokenizer)
    inst_ids: List[int] = []
    if instruction:
        inst_ids = tokenizer(instruction, add_special_tokens=False)["input_ids"]
    if decoder:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos_token; set one before tokenizing")
        head, tail = [], [tokenizer.eos_token_id]
    else:
        head, tail = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
    budget = max_length - len(head) - len(tail) - len(inst_ids)
    if budget < 1:
        raise ValueError(
            f"max_length={max_length} leaves no room for text after the instruction "
            f"({len(inst_ids)} tokens); raise max_length or shorten the instruction"
        )
    body = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    ids = [head + inst_ids + b[:budget] + tail for b in body]
    inst_len = len(head) + len(inst_ids) if inst_ids else 0
    return ids, [inst_len] * len(ids)


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
