"""The final model folder: loadable by ``transformers.AutoModel``, ``SentenceTransformer(path)`` and l2e.

sentence-transformers layout (modules.json → Transformer, Pooling, Normalize) with the query instruction
as the ``query`` prompt. Two details make sentence-transformers give the same vectors as l2e's Embedder:
- decoder tokenizers get a post-processor that appends EOS (as Qwen3-Embedding's tokenizer does), since
  sentence-transformers calls the tokenizer with its special tokens and l2e pools the EOS token;
- skip-instruction maps to the Pooling module's ``include_prompt: false``. sentence-transformers measures
  the prompt by tokenizing it alone, l2e by the common prefix with the text; they agree unless the
  instruction's last token merges into the first word (a trailing space), see README.
LoRA runs write the merged plain model here (``lora_merge_on_export``) and the adapter to ``final_adapter``.
"""
from __future__ import annotations

import json
import os
import shutil

from l2e.config import Config
from l2e.tokens import is_decoder_tokenizer

_ST_POOLING = {"eos": "pooling_mode_lasttoken", "last": "pooling_mode_lasttoken", "mean": "pooling_mode_mean_tokens",
               "weighted_mean": "pooling_mode_weightedmean_tokens", "cls": "pooling_mode_cls_token"}


def export_final(model, tokenizer, cfg: Config, folder: str) -> str:
    """Write ``folder`` atomically (``folder.tmp`` then rename); returns ``folder``."""
    from l2e.model import merge_and_save

    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    settings = model_settings(cfg)
    if cfg.lora_enabled:
        adapter_dir = os.path.join(os.path.dirname(folder), "final_adapter")
        shutil.rmtree(adapter_dir, ignore_errors=True)
        model.save(adapter_dir, tokenizer, extra=settings)
        if not cfg.lora_merge_on_export:
            return adapter_dir
        merge_and_save(model, tmp, tokenizer, extra=settings)
    else:
        model.save(tmp, tokenizer, extra=settings)
    write_sentence_transformers_files(tmp, tokenizer, cfg, model.hidden_size)
    cfg.save(os.path.join(tmp, "training_config.json"))
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return folder


def model_settings(cfg: Config) -> dict:
    """What inference must reproduce, written to ``l2e_model.json`` with every checkpoint and export."""
    return {"pooling_mode": cfg.pooling_mode, "bi_attn_enabled": cfg.bi_attn_enabled,
            "skip_instruction": cfg.skip_instruction, "instruction_separator": cfg.instruction_separator,
            "query_instruction": cfg.query_instruction, "query_max_length": cfg.query_len,
            "passage_max_length": cfg.passage_len}


def write_sentence_transformers_files(folder: str, tokenizer, cfg: Config, hidden_size: int) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    pooling = {name: False for name in ["pooling_mode_cls_token", "pooling_mode_mean_tokens",
                                        "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                                        "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]}
    pooling[_ST_POOLING[cfg.pooling_mode]] = True
    pooling["word_embedding_dimension"] = hidden_size
    pooling["include_prompt"] = not cfg.skip_instruction
    st_config = {"prompts": {"query": cfg.query_instruction, "document": ""}, "default_prompt_name": None,
                 "similarity_fn_name": "cosine", "model_type": "SentenceTransformer"}
    _dump(os.path.join(folder, "modules.json"), modules)
    _dump(os.path.join(folder, "1_Pooling", "config.json"), pooling)
    os.makedirs(os.path.join(folder, "2_Normalize"), exist_ok=True)
    _dump(os.path.join(folder, "config_sentence_transformers.json"), st_config)
    _dump(os.path.join(folder, "sentence_bert_config.json"),
          {"max_seq_length": cfg.passage_len, "do_lower_case": False})
    if is_decoder_tokenizer(tokenizer):
        _append_eos_post_processor(folder, tokenizer)


def _append_eos_post_processor(folder: str, tokenizer) -> None:
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


def _dump(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
