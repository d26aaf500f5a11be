"""The final model folder: loadable by ``transformers.AutoModel``, ``SentenceTransformer(path)`` and l2e.

sentence-transformers layout (modules.json → Transformer, Pooling, Normalize) with the query instruction
as the ``query`` prompt. What inference must reproduce comes from the model's own
:class:`~l2e.model.settings.ModelSettings` (never from the training config again). Two details make
sentence-transformers give the same vectors as l2e's Embedder:
- decoder tokenizers get a post-processor that appends EOS (as Qwen3-Embedding's tokenizer does), since
  sentence-transformers calls the tokenizer with its special tokens and l2e pools the EOS token;
- skip-instruction maps to the Pooling module's ``include_prompt: false``; both sides count the instruction
  as the instruction tokenized alone (``l2e.data.tokens.encode_texts``), and weighted_mean keeps absolute
  positions on both sides (``l2e.model.pooling.weighted_mean_pool``).
LoRA runs write the merged plain model to ``final/`` and the adapter to ``final_adapter/``; with
``lora_merge_on_export: false`` the adapter itself is ``final/`` (l2e and peft load it; sentence-transformers
needs the merged model).
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Sequence

from l2e.core.atomic import atomic_dir, write_json
from l2e.core.registry import make_register
from l2e.core.run_layout import RunLayout
from l2e.data.tokens import is_decoder_tokenizer
from l2e.export.head_exports import write_head_exports
from l2e.model.pooling import get_pooling_spec
from l2e.model.settings import ModelSettings

TRAINING_CONFIG_FILE = "training_config.json"


# --- export targets: each writes one kind of file into the folder being built, from the one (merged) model ------
EXPORT_TARGETS: Dict[str, Callable[[str, Any, Any], None]] = {}
register_target = make_register(EXPORT_TARGETS, "export target")
DEFAULT_TARGETS = ("hf", "sentence-transformers", "engines", "heads")


@register_target("hf")
def _write_hf(folder: str, model, tokenizer) -> None:
    """transformers weights (or the peft adapter), tokenizer, ``l2e_model.json`` and the heads' weights; the
    other targets edit or add to what it writes, so it comes first."""
    model.save(folder, tokenizer)


@register_target("sentence-transformers")
def _write_st(folder: str, model, tokenizer) -> None:
    write_sentence_transformers_files(folder, tokenizer, model.current_settings(), model.hidden_size, model.pooler)


@register_target("engines")
def _write_engines(folder: str, model, tokenizer) -> None:
    write_engine_files(folder, model.current_settings())


@register_target("heads")
def _write_heads(folder: str, model, tokenizer) -> None:
    write_head_exports(folder, model)  # each head's own layout (sparse_encoder/, colbert/...), l2e.model.heads


@register_target("onnx")
def _write_onnx(folder: str, model, tokenizer) -> None:
    """``onnx/model.onnx`` traced from the plain weights just written (not a default: it takes minutes)."""
    from l2e.export.onnx_export import export_onnx

    export_onnx(folder)


def export_final(model, tokenizer, folder: str, *, merge_lora: bool = True, training_config=None,
                 run: Optional[dict] = None, targets: Sequence[str] = DEFAULT_TARGETS) -> str:
    """Write ``folder`` atomically (old or new ``folder`` exists at every instant); returns ``folder``.

    ``targets``: names of :data:`EXPORT_TARGETS`, run in order into the folder ("hf" first). A LoRA model is
    written as its adapter (``final_adapter/``, or ``folder`` itself with ``merge_lora=False``), then merged
    once (``EmbeddingModel.merge_adapter``) and every target reads that merged model. ``training_config`` (an
    ``l2e.config.Config``) is copied in as ``training_config.json`` for the record; with ``run`` (steps,
    samples, validation history) they make the model card ``README.md``.
    """
    unknown = [t for t in targets if t not in EXPORT_TARGETS]
    if unknown or not targets or targets[0] != "hf":
        raise ValueError(f"export targets {list(targets)}: start with 'hf', then any of {', '.join(EXPORT_TARGETS)}")
    if model.is_adapter:
        adapter_dir = RunLayout.of_export(folder).final_adapter if merge_lora else folder
        _write_folder(adapter_dir, model, tokenizer, ("hf",), training_config, run)
        if not merge_lora:
            return folder
        model.merge_adapter()
    _write_folder(folder, model, tokenizer, targets, training_config, run)
    return folder


def _write_folder(dest: str, model, tokenizer, targets: Sequence[str], training_config, run) -> None:
    with atomic_dir(dest) as tmp:
        for name in targets:
            EXPORT_TARGETS[name](tmp, model, tokenizer)
        _write_config(tmp, training_config, model, run, dest)


def write_engine_files(folder: str, settings: ModelSettings) -> None:
    """What serving engines read besides transformers' ``is_causal``, and what would mislead them.

    - text-embeddings-inference switches Llama, Mistral and Qwen3 to bidirectional attention with
      ``use_bidirectional_attention: true`` (it never reads ``is_causal``; Qwen2 is the exception); vLLM's
      pooling runner and transformers read ``is_causal: false``. A bidirectional export carries both.
    - ``chat_template.jinja`` (SmolLM2's tokenizer has one) is removed: vLLM's ``/v2/embed`` would wrap the
      query prompt in the chat template, and an embedding model is never chatted with.
    """
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    if settings.bi_attn_enabled:
        config["is_causal"] = False
        config["use_bidirectional_attention"] = True
    write_json(path, config, indent=2)
    template = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(template):
        os.remove(template)


def _write_config(folder: str, training_config, model, run: Optional[dict], dest: str) -> None:
    from l2e.export.model_card import write_model_card

    if training_config is not None:
        training_config.save(os.path.join(folder, TRAINING_CONFIG_FILE))
    write_model_card(folder, model.current_settings(), model.hidden_size, training_config, run, dest=dest)


def write_sentence_transformers_files(folder: str, tokenizer, settings: ModelSettings, hidden_size: int,
                                      pooler=None) -> None:
    """``pooler``: the model's trainable pooling module (attention / latent_attention), saved as l2e's
    ``TrainablePooling`` sentence-transformers module instead of the built-in ``Pooling``."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    st_mode = get_pooling_spec(settings.pooling_mode).st_mode
    if pooler is None and st_mode is None:
        return  # sentence-transformers has no such pooling: the folder loads in l2e (and transformers) only
    if pooler is not None:
        from l2e.export.st_modules import TrainablePooling

        modules[1] = {"idx": 1, "name": "1", "path": "1_TrainablePooling",
                      "type": "l2e.export.st_modules.TrainablePooling"}
        module = TrainablePooling(settings.pooling_mode, hidden_size, settings.latent_num, settings.latent_heads,
                                  settings.latent_head_dim, settings.latent_mlp_mult, not settings.skip_instruction)
        module.pooler.load_state_dict(pooler.state_dict())
        os.makedirs(os.path.join(folder, "1_TrainablePooling"), exist_ok=True)
        module.save(os.path.join(folder, "1_TrainablePooling"))
    else:
        pooling = {name: False for name in ["pooling_mode_cls_token", "pooling_mode_mean_tokens",
                                            "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                                            "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]}
        pooling[st_mode] = True
        pooling["word_embedding_dimension"] = hidden_size
        pooling["include_prompt"] = not settings.skip_instruction
        write_json(os.path.join(folder, "1_Pooling", "config.json"), pooling, indent=2)
    st_config = {"prompts": {"query": settings.query_instruction, "document": ""}, "default_prompt_name": None,
                 "similarity_fn_name": "cosine", "model_type": "SentenceTransformer"}
    write_json(os.path.join(folder, "modules.json"), modules, indent=2)
    os.makedirs(os.path.join(folder, "2_Normalize"), exist_ok=True)
    write_json(os.path.join(folder, "config_sentence_transformers.json"), st_config, indent=2)
    write_json(os.path.join(folder, "sentence_bert_config.json"),
              {"max_seq_length": settings.inference_max_length, "do_lower_case": False}, indent=2)
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
    write_json(path, spec, newline=False, ensure_ascii=False)
