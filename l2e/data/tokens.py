"""Text → token ids, the one place both ``tokenize_data.py`` (training) and the Embedder (inference) use.

Why one function: an embedding model is only as good as the agreement between how it was trained and how
it is queried. Decoder LLMs pool the EOS token (F2LLM, Qwen3-Embedding), so EOS is appended *after*
truncation and always survives it. An instruction prefix (``Instruct: …\\nQuery:``) is tokenized together
with the text, as sentence-transformers prompts are, and its length recorded so skip-instruction pooling
can exclude it. Encoder models (BERT/MiniLM) instead get their own special tokens ([CLS] … [SEP]).
"""
from __future__ import annotations

import hashlib
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of what decides the ids: the vocabulary and the special tokens l2e adds. Written with the
    tokenized data and compared with the model's tokenizer before training (same text, same ids)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    special = [tokenizer.eos_token_id, getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)]
    return hashlib.sha256(json.dumps([vocab, special], ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


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
    sentence-transformers does with prompts, so an exported model gives the same ids. The instruction
    length is the length of the instruction tokenized *alone* -- sentence-transformers' definition
    (``Transformer._get_prompt_length``), which its Pooling module, and every engine that serves the export,
    applies as one number per prompt. Why not the exact common prefix: when the instruction's last token
    merges into the first word (a trailing space, ``Query: `` + ``GNU`` → `` GNU``) the two differ by one
    token, and no exported pooling config could reproduce a per-text count; with one definition on both
    sides the vectors agree for any instruction. Instructions that end on a token boundary (Qwen3-Embedding's
    ``Instruct: …\\nQuery:``) keep the first word in the pooled tokens. Decoder tokenizers: no special
    tokens from the tokenizer, EOS appended last and kept after truncation. Encoder tokenizers:
    ``[CLS] … [SEP]``.
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
    inst_len = len(head) + len(inst_ids) if inst_ids else 0
    ids = [head + body[:budget] + tail for body in bodies]
    return ids, [inst_len] * len(ids)


def split_inline_instruction(text: str, separator: str) -> Tuple[str, str]:
    """``(instruction, text)`` of a query that carries its instruction inline (F2LLM's data does).

    The instruction runs up to and including the first ``separator`` (``"Query:"``); the rest is the text,
    so ``instruction + text == text`` as given and the token ids do not change, only where pooling starts.
    No separator (or an empty one): ``("", text)``.
    """
    at = text.find(separator) if separator else -1
    if at < 0:
        return "", text
    cut = at + len(separator)
    return text[:cut], text[cut:]


def encode_inline(tokenizer, texts: Sequence[str], max_length: int,
                  separator: str) -> Tuple[List[List[int]], List[int]]:
    """``encode_texts`` for texts whose instruction is inline, found by ``separator`` (grouped per instruction)."""
    ids: List[List[int]] = [[] for _ in texts]
    lens = [0] * len(texts)
    groups: Dict[str, List[int]] = {}
    parts = [split_inline_instruction(t, separator) for t in texts]
    for i, (inst, _) in enumerate(parts):
        groups.setdefault(inst, []).append(i)
    for inst, members in groups.items():
        got, got_lens = encode_texts(tokenizer, [parts[i][1] for i in members], max_length, inst or None)
        for i, seq, n in zip(members, got, got_lens):
            ids[i], lens[i] = seq, n
    return ids, lens


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


def chunk_windows(tokenizer, texts: Sequence[str], chunk_tokens: int,
                  window_tokens: int) -> List[List[Tuple[List[int], List[Tuple[int, int]]]]]:
    """Long documents in pieces: per text, its windows ``(ids, spans)``.

    The text's tokens (no instruction: chunking is for documents) are cut into chunks of ``chunk_tokens``; a window
    holds as many whole chunks as fit in ``window_tokens`` together with the special tokens ``encode_texts`` adds
    (decoders: EOS last; encoders: [CLS] ... [SEP]), and ``spans`` are each chunk's ``[start, end)`` positions in
    the window's ``ids`` -- the first chunk of a window takes its leading special token, the last its trailing one,
    so a text that fits one chunk has exactly ``encode_texts``' ids and one span over all of them. Nothing is cut
    off: every token of every text lands in one chunk.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens} must be at least 1")
    if is_decoder_tokenizer(tokenizer):
        head, tail = [], [tokenizer.eos_token_id]
    else:
        head, tail = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
    per_window = (window_tokens - len(head) - len(tail)) // chunk_tokens  # whole chunks per window
    if per_window < 1:
        raise ValueError(f"a window of {window_tokens} tokens holds no chunk of {chunk_tokens} tokens plus "
                         f"{len(head) + len(tail)} special token(s); raise the window (max_length) or lower chunk_tokens")
    bodies = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []
    out = []
    for body in bodies:
        chunks = [body[i:i + chunk_tokens] for i in range(0, len(body), chunk_tokens)] or [[]]
        windows = []
        for w in range(0, len(chunks), per_window):
            group = chunks[w:w + per_window]
            ids = head + [t for chunk in group for t in chunk] + tail
            ends = np.cumsum([len(head) + len(group[0])] + [len(c) for c in group[1:]]).tolist()
            ends[-1] = len(ids)
            windows.append((ids, list(zip([0] + ends[:-1], ends))))
        out.append(windows)
    return out
