"""The final model folder: loadable by ``transformers.AutoModel``, ``SentenceTransformer(path)`` and l2e.

sentence-transformers layout (modules.json → Transformer, Pooling, Normalize) with the query instruction
as the ``query`` prompt. What inference must reproduce comes from the model's own
:class:`~l2e.settings.ModelSettings` (never from the training config again). Two details make
sentence-transformers give the same vectors as l2e's Embedder:
- decoder tokenizers get a post-processor that appends EOS (as Qwen3-Embedding's tokenizer does), since
  sentence-transformers calls the tokenizer with its special tokens and l2e pools the EOS token;
- skip-instruction maps to the Pooling module's ``include_prompt: false``; both sides count the instruction
  as the instruction tokenized alone (``l2e.tokens.encode_texts``), and weighted_mean keeps absolute
  positions on both sides (``l2e.pooling.weighted_mean_pool``).
LoRA runs write the merged plain model to ``final/`` and the adapter to ``final_adapter/``; with
``lora_merge_on_export: false`` the adapter itself is ``final/`` (l2e and peft load it; sentence-transformers
needs the merged model).
"""
from __future__ import annotations

import json
import os
from typing import Optional

from l2e.atomic import atomic_dir
from l2e.settings import ModelSettings
from l2e.tokens import is_decoder_tokenizer

_ST_POOLING = {"eos": "pooling_mode_lasttoken", "last": "pooling_mode_lasttoken", "mean": "pooling_mode_mean_tokens",
               "weighted_mean": "pooling_mode_weightedmean_tokens", "cls": "pooling_mode_cls_token"}
TRAINING_CONFIG_FILE = "training_config.json"


def export_final(model, tokenizer, folder: str, *, merge_lora: bool = True, training_config=None) -> str:
    """Write ``folder`` atomically (old or new ``folder`` exists at every instant); returns ``folder``.

    ``training_config`` (an ``l2e.config.Config``) is copied in as ``training_config.json`` for the record.
    """
    from l2e.model import merge_and_save

    if model.is_adapter:
        adapter_dir = os.path.join(os.path.dirname(folder), "final_adapter") if merge_lora else folder
        with atomic_dir(adapter_dir) as tmp:
            model.save(tmp, tokenizer)
            _write_config(tmp, training_config)
        if not merge_lora:
            return folder
        with atomic_dir(folder) as tmp:
            merge_and_save(model, tmp, tokenizer)
            write_sentence_transformers_files(tmp, tokenizer, model.current_settings(), model.hidden_size)
            _write_config(tmp, training_config)
        return folder
    with atomic_dir(folder) as tmp:
        model.save(tmp, tokenizer)
        write_sentence_transformers_files(tmp, tokenizer, model.current_settings(), model.hidden_size)
        _write_config(tmp, training_config)
    return folder


def _write_config(folder: str, training_config) -> None:
    if training_config is not None:
        training_config.save(os.path.join(folder, TRAINING_CONFIG_FILE))


def write_sentence_transformers_files(folder: str, tokenizer, settings: ModelSettings, hidden_size: int) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    pooling = {name: False for name in ["pooling_mode_cls_token", "pooling_mode_mean_tokens",
                                        "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                                        "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]}
    pooling[_ST_POOLING[settings.pooling_mode]] = True
    pooling["word_embedding_dimension"] = hidden_size
    pooling["include_prompt"] = not settings.skip_instruction
    st_config = {"prompts": {"query": settings.query_instruction, "document": ""}, "default_prompt_name": None,
                 "similarity_fn_name": "cosine", "model_type": "SentenceTransformer"}
    dump_json(os.path.join(folder, "modules.json"), modules)
    dump_json(os.path.join(folder, "1_Pooling", "config.json"), pooling)
    os.makedirs(os.path.join(folder, "2_Normalize"), exist_ok=True)
    dump_json(os.path.join(folder, "config_sentence_transformers.json"), st_config)
    dump_json(os.path.join(folder, "sentence_bert_config.json"),
              {"max_seq_length": settings.passage_max_length, "do_lower_case": False})
    if is_decoder_tokenizer(tokenizer):
        append_eos_post_processor(folder, tokenizer)


def append_eos_post_processor(folder: str, tokenizer) -> None:
    """Make the saved fast tokenizer append EOS itself (truncation then keeps room for it)."""
    path = os.path.join(folder, "tokenizer.json")
    with open(path) as f:
        spec = json.load(f)
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
        "special_tokens": {eos: {"id": eos, "ids": [eos_id], "tokens": [eos]}},
    }
    with open(path, "w") as f:
        json.dump(spec, f, ensure_ascii=False)


def dump_json(path: str, obj, indent: Optional[int] = 2) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
