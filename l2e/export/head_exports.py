"""Each representation head's export in its sentence-transformers peer's layout: ``HEAD_EXPORTS`` (head name ->
:class:`HeadExport`: sub-folder of ``final/``, the class that loads it, its builder), filled by
``@register_head_export``. A head without an entry is exported in ``l2e_extras`` only (l2e loads it)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict

import torch

from l2e.model.settings import ModelSettings


@dataclass(frozen=True)
class HeadExport:
    folder: str  # sub-folder of the exported folder
    st_class: str  # the sentence-transformers class that loads it (model card)
    load_kwargs: str  # extra arguments it needs, as the model card writes them (", trust_remote_code=True")
    build: Callable  # (folder, model, settings) -> a sentence-transformers model to .save()


HEAD_EXPORTS: Dict[str, HeadExport] = {}


def register_head_export(head: str, folder: str, st_class: str, load_kwargs: str = ""):
    """``@register_head_export("sparse", "sparse_encoder", "SparseEncoder")`` on a builder; a duplicate raises."""

    def wrap(build: Callable) -> Callable:
        if head in HEAD_EXPORTS:
            raise ValueError(f"head export {head!r} is already registered")
        HEAD_EXPORTS[head] = HeadExport(folder, st_class, load_kwargs, build)
        return build

    return wrap


def write_head_exports(folder: str, model) -> dict:
    """Each representation head in its peer's layout, in a sub-folder of the exported ``folder``:

    - ``sparse_encoder/``: sentence-transformers ``SparseEncoder`` with l2e's ``LexicalWeights`` module
      (load with ``trust_remote_code=True``, l2e installed);
    - ``splade_encoder/``: ``SparseEncoder`` = causal-LM ``Transformer`` (LM head tied to the input embeddings,
      as l2e's SPLADE head reads it) + ``SpladePooling(max, relu)``; all built-in;
    - ``multi_vector_encoder/``: ``MultiVectorEncoder`` = ``Transformer`` + ``Dense`` (the ColBERT projection) +
      ``MultiVectorMask`` + ``Normalize``, similarity ``meanmaxsim``; all built-in.
    Each holds its own copy of the backbone (sentence-transformers loads a module from its folder).
    Returns ``{head: sub-folder}``.
    """
    settings = model.current_settings()
    out = {}
    for head in settings.heads:
        export = HEAD_EXPORTS.get(head)
        if export is None:  # a head with no sentence-transformers peer: its weights ride in l2e_extras only
            continue
        target = os.path.join(folder, export.folder)
        export.build(folder, model, settings).save(target)
        out[head] = target
    return out


def _text_transformer(folder: str, settings: ModelSettings, **kwargs):
    from sentence_transformers.base.modules.transformer import Transformer

    # A pinned text modality: SmolLM2's tokenizer has a chat template, and sentence-transformers would otherwise
    # render plain strings through it.
    modality = {"text": {"method": "forward", "method_output_name": kwargs.pop("output", "last_hidden_state")}}
    return Transformer(folder, max_seq_length=settings.inference_max_length, modality_config=modality,
                       module_output_name="token_embeddings", **kwargs)


def _prompts(settings: ModelSettings) -> dict:
    return {"query": settings.query_instruction, "document": ""}


@register_head_export("sparse", "sparse_encoder", "SparseEncoder", ", trust_remote_code=True")
def _lexical_encoder(folder: str, model, settings: ModelSettings):
    from sentence_transformers import SparseEncoder

    from l2e.export.st_modules import LexicalWeights

    head = model.heads["sparse"]
    module = LexicalWeights(model.hidden_size, head.vocab_size, settings.special_token_ids, idf=settings.sparse_idf)
    module.linear.load_state_dict(head.linear.state_dict())
    if settings.sparse_idf:
        module.token_idf.copy_(head.idf)
    return SparseEncoder(modules=[_text_transformer(folder, settings), module], prompts=_prompts(settings),
                         similarity_fn_name="dot", device="cpu")


@register_head_export("splade", "splade_encoder", "SparseEncoder")
def _splade_encoder(folder: str, model, settings: ModelSettings):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    transformer = _text_transformer(folder, settings, output="logits", transformer_task="text-generation",
                                    processing_kwargs={"text": {"logits_to_keep": 0}},
                                    config_kwargs={"tie_word_embeddings": True})
    pooling = SpladePooling("max", activation_function="relu", embedding_dimension=model.backbone.config.vocab_size)
    return SparseEncoder(modules=[transformer, pooling], prompts=_prompts(settings), similarity_fn_name="dot",
                         device="cpu")


@register_head_export("colbert", "multi_vector_encoder", "MultiVectorEncoder")
def _multi_vector_encoder(folder: str, model, settings: ModelSettings):
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.multi_vector_encoder.modules.multi_vector_mask import MultiVectorMask

    linear = model.heads["colbert"].linear
    dense = Dense(linear.in_features, linear.out_features, bias=False, activation_function=torch.nn.Identity(),
                  module_input_name="token_embeddings", module_output_name="token_embeddings")
    dense.linear.load_state_dict(linear.state_dict())
    modules = [_text_transformer(folder, settings), dense, MultiVectorMask(skiplist_words=[]),
               Normalize(module_input_name="token_embeddings", module_output_name="token_embeddings")]
    return MultiVectorEncoder(modules=modules, prompts=_prompts(settings), similarity_fn_name="meanmaxsim",
                              device="cpu")
