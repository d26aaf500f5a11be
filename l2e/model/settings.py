"""``ModelSettings``: the one record of what inference must reproduce.

Built once from the training config (:meth:`ModelSettings.from_config`), held by the ``EmbeddingModel``,
written as ``l2e_model.json`` next to the weights of every checkpoint and export, and read back by the
Embedder, the evaluator, the miner and the exporters. Nothing else carries these values: an export reads
them from the model, never from the config again.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from l2e.core.atomic import write_json
from l2e.core.errors import L2EError
from l2e.model import attention_pooling as _trainable_poolings  # noqa: F401  (their rows of POOLINGS)
from l2e.model.heads import HEADS, enabled_heads, head_option
from l2e.model.pooling import POOLINGS

SETTINGS_FILE = "l2e_model.json"
# Derived from the registries when l2e loads (argparse choices); validation reads POOLINGS and HEADS themselves, so a
# pooling or head registered later is valid too.
POOLING_MODES = tuple(POOLINGS)
TRAINABLE_POOLING = tuple(name for name, spec in POOLINGS.items() if spec.trainable)
HEAD_NAMES = tuple(HEADS)


def split_gguf(model_path: str, gguf_file: str = "") -> Tuple[str, Optional[str]]:
    """(folder, gguf file name or None): ``model_path`` may be a .gguf file or a folder plus ``gguf_file``."""
    if model_path.endswith(".gguf"):
        return os.path.dirname(os.path.abspath(model_path)), os.path.basename(model_path)
    return model_path, gguf_file or None


def source_settings(model_path: str, gguf_file: str = "") -> Dict[str, str]:
    """Where the base weights live; an adapter checkpoint must find its base again from anywhere."""
    folder, gguf = split_gguf(model_path, gguf_file)
    return {"base_model_path": os.path.abspath(folder) if os.path.exists(folder) else folder, "gguf_file": gguf or ""}


# F2LLM's queries carry their instruction inline ("Instruct: ...\nQuery:text"): the text up to and including this
# marks the instruction. The default of tokenization (--instruction_separator) and training (the config key);
# a saved model records the separator it was trained with (ModelSettings.instruction_separator).
INSTRUCTION_SEPARATOR = "Query:"


class SettingsError(L2EError):
    """A bad ``l2e_model.json`` or a bad override of one of its values."""


@dataclass(frozen=True)
class ModelSettings:
    pooling_mode: str = "eos"  # l2e.model.pooling.POOLING name
    bi_attn_enabled: bool = False  # the backbone runs with config.is_causal = False
    skip_instruction: bool = False  # instruction tokens are attended to but left out of pooling
    instruction_separator: str = ""  # queries given without an instruction: text up to this marks it
    query_instruction: str = ""  # default instruction prefix of queries
    query_max_length: int = 512  # token caps, EOS included
    passage_max_length: int = 512
    base_model_path: str = ""  # where the base weights live (an adapter checkpoint needs them)
    gguf_file: str = ""
    is_adapter: bool = False  # the folder holds a peft LoRA adapter on base_model_path, not full weights
    heads: Tuple[str, ...] = ()  # representations besides dense: names of l2e.model.heads.HEADS
    colbert_dim: int = 128  # width of the multi-vector head's token vectors
    special_token_ids: Tuple[int, ...] = ()  # ids the lexical head never weighs (the tokenizer's special tokens)
    sparse_idf: bool = False  # the lexical head scales each token's weight by sqrt(idf) (l2e.model.heads.LexicalHead)
    hybrid_weights: Tuple[Tuple[str, float], ...] = ()  # (representation, weight) of the fused score
    latent_num: int = 32  # latent_attention pooling: latents, heads, head width, feed-forward multiplier
    latent_heads: int = 4
    latent_head_dim: int = 64
    latent_mlp_mult: int = 1

    def __post_init__(self):
        problems = []
        if self.pooling_mode not in POOLINGS:
            problems.append(f"pooling_mode={self.pooling_mode!r}; use one of {', '.join(POOLINGS)}")
        for name in ("query_max_length", "passage_max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name}={value!r} must be a positive integer")
        unknown = [h for h in self.heads if h not in HEADS]
        if unknown:
            problems.append(f"heads={list(self.heads)}: unknown {unknown}; use {', '.join(HEADS)}")
        # JSON gives lists; the record is immutable and hashable.
        object.__setattr__(self, "heads", tuple(self.heads))
        object.__setattr__(self, "special_token_ids", tuple(self.special_token_ids))
        object.__setattr__(self, "hybrid_weights", tuple((str(k), float(v)) for k, v in self.hybrid_weights))
        if problems:
            raise SettingsError("model settings: " + "; ".join(problems))

    @property
    def inference_max_length(self) -> int:
        """The one token cap inference applies to queries and documents alike: the longer of the two training
        caps. Why one: sentence-transformers (one ``max_seq_length``), ONNX Runtime, vLLM and TEI can express only
        one, and l2e's own Embedder must give the vectors they give. Training may still cut queries shorter
        (``query_max_length``) to save compute; a longer query at inference only adds text the model can read."""
        return max(self.query_max_length, self.passage_max_length)

    @classmethod
    def from_config(cls, cfg, special_token_ids=(), source: Optional[Dict[str, str]] = None) -> "ModelSettings":
        """The settings a training run with ``cfg`` (an ``l2e.config.Config``) produces; ``source``: where the
        base weights live (default: ``cfg.model_path``)."""
        heads = tuple(enabled_heads(cfg))
        weights = (("dense", cfg.fusion_dense_weight),) + tuple((h, head_option(cfg, h, "fusion_weight")) for h in heads)
        return cls(pooling_mode=cfg.pooling_mode, bi_attn_enabled=cfg.bi_attn_enabled,
                   skip_instruction=cfg.skip_instruction, instruction_separator=cfg.instruction_separator,
                   query_instruction=cfg.query_instruction, query_max_length=cfg.query_len,
                   passage_max_length=cfg.passage_len, is_adapter=cfg.lora_enabled, heads=heads,
                   colbert_dim=cfg.colbert_dim, sparse_idf=cfg.sparse_enabled and cfg.sparse_idf,
                   special_token_ids=tuple(special_token_ids) if heads else (),
                   hybrid_weights=weights if heads else (), latent_num=cfg.latent_num, latent_heads=cfg.latent_heads,
                   latent_head_dim=cfg.latent_head_dim, latent_mlp_mult=cfg.latent_mlp_mult,
                   **(source or source_settings(cfg.model_path, cfg.gguf_file)))

    def replace(self, **changes) -> "ModelSettings":
        """A copy with ``changes``; an unknown name is refused with the valid ones."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise SettingsError(f"cannot override {unknown}; model settings are: {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, folder: str) -> None:
        write_json(os.path.join(folder, SETTINGS_FILE), self.to_dict(), indent=2)

    @classmethod
    def load(cls, folder: str) -> "ModelSettings":
        path = os.path.join(folder, SETTINGS_FILE)
        if not os.path.isfile(path):
            raise SettingsError(
                f"{folder}: no {SETTINGS_FILE}, so it is not an l2e checkpoint; for a plain Hugging Face, "
                "sentence-transformers or GGUF model use Embedder.from_pretrained (or --baseline)")
        try:
            with open(path) as f:
                raw = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SettingsError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: expected a JSON object")
        unknown = sorted(set(raw) - set(FIELDS))
        if unknown:
            # A setting this version cannot reproduce would silently give other vectors: refuse.
            raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}; written by a newer l2e? "
                                f"known: {', '.join(FIELDS)}")
        return cls(**raw)


FIELDS = tuple(f.name for f in dataclasses.fields(ModelSettings))
