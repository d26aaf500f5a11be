"""The embedding model: a base LLM without LM head, optional bidirectional attention, LoRA/QLoRA, pooling.

``build_model(cfg)`` is the one builder (training); ``load_embedding_model(ckpt_dir)`` reads back what
``EmbeddingModel.save`` wrote (inference). A checkpoint folder holds the backbone (full weights, or only
the LoRA adapter), the tokenizer and ``l2e_model.json`` with the settings inference must reproduce
(pooling, bidirectional attention, instruction handling, max lengths, where the base model lives).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from l2e.model.bidirectional import is_bidirectional, set_bidirectional
from l2e.model.pooling import get_pooling

from l2e.core.errors import ModelError, one_line
# SETTINGS_FILE: re-exported. split_gguf and source_settings live with the settings, which must not import this
# torch-heavy module back (ModelSettings.from_config needs them).
from l2e.model.settings import SETTINGS_FILE, ModelSettings, source_settings, split_gguf  # noqa: F401

# In a subfolder: serving engines (vLLM) load every top-level *.safetensors of a model folder as backbone weights
# and refuse names they do not know ("no module or parameter named 'heads' in LlamaModel").
HEADS_FILE = os.path.join("l2e_extras", "heads.safetensors")


class ModelNotAvailableError(ModelError):
    """``model_path`` is neither a local folder/file nor a cached hub id that may be used offline."""


class EmbeddingModel(nn.Module):
    """Backbone (plain or peft-wrapped) + pooling: ``forward`` returns un-normalised (batch, hidden) float32.

    ``settings`` (:class:`l2e.model.settings.ModelSettings`) is what inference must reproduce; ``save`` writes it
    next to the weights. ``pool_mask`` is used only when ``skip_instruction`` is on, so callers can always
    pass it.
    """

    def __init__(self, backbone: nn.Module, settings: ModelSettings, heads: Optional[nn.ModuleDict] = None):
        super().__init__()
        from l2e.model.attention_pooling import build_pooler

        self.backbone = backbone
        self.settings = settings
        self.pooler = build_pooler(settings, backbone.config.hidden_size)  # None: a parameter-free pooling
        if self.pooler is None:
            get_pooling(settings.pooling_mode)  # fail now, with the valid names, not at the first batch
        if heads is None and settings.heads:
            from l2e.model.heads import build_heads

            heads = build_heads(settings.heads, backbone, settings)
        self.heads = heads if heads is not None else nn.ModuleDict()
        self.carried_extras = frozenset()  # extras loaded from an earlier stage (build_model)

    @property
    def pooling_mode(self) -> str:
        return self.settings.pooling_mode

    @property
    def skip_instruction(self) -> bool:
        return self.settings.skip_instruction

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def is_adapter(self) -> bool:
        return _is_peft(self.backbone)

    def merge_adapter(self) -> "EmbeddingModel":
        """Fold the LoRA adapter into the base weights, in place (a plain model is left as it is): the one merge
        behind exports, the ONNX graph, a chain stage started from an adapter and weight averaging. A 4/8-bit
        base (QLoRA) cannot hold merged weights, so the base is reloaded unquantized and the adapter applied
        first. Same embeddings before and after (peft's ``merge_and_unload``)."""
        if not self.is_adapter:
            return self
        if _is_kbit(self.backbone):
            self.backbone = _reload_unquantized(self)
        self.backbone = self.backbone.merge_and_unload()
        return self

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden) last hidden states."""
        # Positions counted over real tokens: a left-padded text gets the same positions (and the same
        # states) as when unpadded. transformers would otherwise number the padding too.
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (batch, seq)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The pooled dense embedding (batch, hidden), float32, not normalised."""
        return self._pool(self.token_states(input_ids, attention_mask), attention_mask, pool_mask)

    def encode_all(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   pool_mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """One backbone pass, every representation: ``dense`` (batch, hidden) and each head's (l2e.model.heads)."""
        from l2e.model.heads import head_reps

        hidden = self.token_states(input_ids, attention_mask)
        # The lexical head never weighs instruction tokens (the same for every query), whatever skip_instruction says.
        reps = head_reps(self.heads, hidden, input_ids, attention_mask, pool_mask)
        return {"dense": self._pool(hidden, attention_mask, pool_mask), **reps}

    def pool_spans(self, hidden: torch.Tensor, attention_mask: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """(batch, hidden) embeddings of the tokens ``span_mask`` (batch, seq) marks, from states computed over the
        whole sequence (late chunking: each chunk's vector has read the whole document). Only poolings that pool a
        set of tokens can do this; ``eos``/``last`` take one position per text."""
        from l2e.model.pooling import get_pooling_spec

        if not get_pooling_spec(self.pooling_mode).skips_instruction:
            raise ModelError(f"pooling {self.pooling_mode!r} takes one token per text, so it cannot pool a chunk of "
                             "it; late chunking needs a pooling over tokens (mean, weighted_mean, a trainable one): "
                             "use maxp chunking for this model")
        if self.pooler is not None:
            return self.pooler(hidden, attention_mask.bool() & span_mask.bool())
        return get_pooling(self.pooling_mode)(hidden, attention_mask, span_mask)

    def _pool(self, hidden, attention_mask, pool_mask):
        pool_mask = pool_mask if self.skip_instruction else None
        if self.pooler is not None:
            keep = attention_mask.bool() & (pool_mask.bool() if pool_mask is not None else True)
            return self.pooler(hidden, keep)
        return get_pooling(self.pooling_mode)(hidden, attention_mask, pool_mask)

    def extras(self) -> Dict[str, torch.Tensor]:
        """The weights beside the backbone: heads and a trainable pooling (saved to ``HEADS_FILE``)."""
        state = {f"heads.{k}": v for k, v in self.heads.state_dict().items()}
        if self.pooler is not None:
            state.update({f"pooler.{k}": v for k, v in self.pooler.state_dict().items()})
        return state

    def current_settings(self) -> ModelSettings:
        """``settings`` with what the backbone is now (adapter or merged, causal or not)."""
        return self.settings.replace(is_adapter=self.is_adapter, bi_attn_enabled=is_bidirectional(self.backbone))

    def save(self, out_dir: str, tokenizer=None) -> None:
        """Write the backbone (the adapter only under LoRA), the tokenizer and ``l2e_model.json``."""
        os.makedirs(out_dir, exist_ok=True)
        self.backbone.save_pretrained(out_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(out_dir)
        extras = self.extras()
        if extras:
            from safetensors.torch import save_file

            state = {k: v.detach().contiguous() for k, v in extras.items()}
            os.makedirs(os.path.join(out_dir, os.path.dirname(HEADS_FILE)), exist_ok=True)
            save_file(state, os.path.join(out_dir, HEADS_FILE), metadata={"format": "pt"})
        self.current_settings().save(out_dir)

    def load_heads(self, folder: str) -> None:
        """The heads' and trainable pooling's weights saved next to the backbone (missing or damaged: one line)."""
        if not self.extras():
            return
        from safetensors.torch import load_file

        path = os.path.join(folder, HEADS_FILE)
        try:
            state = load_file(path)
            self.heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")})
            if self.pooler is not None:
                self.pooler.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("pooler.")})
        except Exception as e:  # noqa: BLE001 -- missing, truncated or of another shape
            parts = list(self.settings.heads) + ([self.pooling_mode] if self.pooler is not None else [])
            raise ModelError(f"{path}: cannot load the {', '.join(parts)} weights "
                             f"({type(e).__name__}: {one_line(str(e))[:200]})") from e


def _is_peft(module: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(module, PeftModel)


# --- loading ----------------------------------------------------------------------------------------------


def resolve_dtype(name: str) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (the training dtype of modern LLMs), float32 on CPU (bf16 matmuls crawl there)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _source_kwargs(folder: str, gguf: Optional[str], cache_dir: str) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {"cache_dir": cache_dir or None}
    if gguf:
        kwargs["gguf_file"] = gguf
    if not os.path.isdir(folder) and _hub_offline():
        kwargs["local_files_only"] = True  # never reach for the network when it is off: fail fast, clearly
    return kwargs


def _not_available(folder: str, err: Exception) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"model_path={folder!r} is not available locally: it is not a folder on this machine and not in the "
        f"Hugging Face cache (downloads are off or failed: {type(err).__name__}). Download it where there is "
        f"internet (`hf download {folder} --local-dir DIR`) and set model_path to that folder, or to a .gguf file."
    )


def check_attn_implementation(name: str) -> None:
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ModelError(
            "attn_implementation='flash_attention_2' needs the flash-attn package (CUDA only: "
            "pip install flash-attn); it is not installed. Use attn_implementation='sdpa'."
        )


def _quantization_kwargs(quantization: str, dtype: torch.dtype) -> Dict[str, Any]:
    """bitsandbytes settings for QLoRA (Dettmers 2023: NF4, double quantization, bf16 compute)."""
    if not torch.cuda.is_available():
        raise ModelError(
            f"quantization={quantization!r} (QLoRA) needs a CUDA GPU for bitsandbytes and this machine has none; "
            "set quantization='none' to train LoRA on full-precision weights."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=dtype)
    else:
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": bnb, "device_map": {"": torch.cuda.current_device()}}


def drop_gguf_quantizer(model: nn.Module) -> None:
    """Make a GGUF-loaded model an ordinary one so that ``save_pretrained`` works.

    transformers dequantizes GGUF tensors to plain float tensors at load but still marks the model as
    quantized (``config.quantization_config``, ``hf_quantizer``, ``is_quantized``), and refuses to save it.
    """
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None


def load_backbone(model_path: str, gguf_file: str = "", torch_dtype: str = "auto", attn_implementation: str = "sdpa",
                  quantization: str = "none", cache_dir: str = "", attention_dropout: float = 0.0) -> nn.Module:
    """The base model without LM head (``AutoModel``) from a folder, a hub id or a GGUF file.

    ``attention_dropout`` > 0 is set on the config before the model is built (the attention modules read it once,
    at construction); it acts in training mode only.
    """
    check_attn_implementation(attn_implementation)
    folder, gguf = split_gguf(model_path, gguf_file)
    dtype = resolve_dtype(torch_dtype)
    kwargs = {"dtype": dtype, "attn_implementation": attn_implementation, **_source_kwargs(folder, gguf, cache_dir)}
    if attention_dropout:
        kwargs["attention_dropout"] = attention_dropout
    if quantization != "none":
        kwargs.update(_quantization_kwargs(quantization, dtype))
    try:
        model = AutoModel.from_pretrained(folder, **kwargs)
    except Exception as e:  # noqa: BLE001 -- whatever a damaged or foreign file raises, the user gets one line
        raise _load_error(folder, gguf, "model", e) from e
    if gguf:
        drop_gguf_quantizer(model)
    model.config.use_cache = False  # embeddings never generate; a KV cache only costs memory
    return model


def _load_error(folder: str, gguf: Optional[str], what: str, err: Exception) -> ModelError:
    """One line for a model or tokenizer that cannot be loaded: missing (hub id offline) or damaged."""
    if not os.path.exists(folder):
        return _not_available(folder, err)
    where = os.path.join(folder, gguf) if gguf else folder
    hint = ("is it a GGUF file (llama.cpp format)?" if gguf else
            "a model folder holds config.json and *.safetensors (complete, not truncated)")
    return ModelError(f"{where}: cannot load the {what} ({type(err).__name__}: {one_line(str(err))[:300]}); {hint}")


def ensure_pad_token(tokenizer) -> None:
    """Decoders often ship without a pad token: pad with EOS (positions come from the mask, never from ids)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token; set one")
        tokenizer.pad_token = tokenizer.eos_token
    # l2e.data.tokens.pad_batch pads on the right; keep tokenizer(...) padding consistent with it. Pooling and
    # position ids work for either side.
    tokenizer.padding_side = "right"


def load_tokenizer(model_path: str, gguf_file: str = "", cache_dir: str = ""):
    folder, gguf = split_gguf(model_path, gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **_source_kwargs(folder, gguf, cache_dir))
    except Exception as e:  # noqa: BLE001 -- as in load_backbone
        raise _load_error(folder, gguf, "tokenizer", e) from e
    check_tokenizer(tokenizer, os.path.join(folder, gguf) if gguf else folder)
    ensure_pad_token(tokenizer)
    return tokenizer


def check_tokenizer(tokenizer, where: str) -> None:
    """A folder without tokenizer files can still give a tokenizer object that maps every text to ``[]`` (or
    to one unknown id); training on that would silently learn nothing. Refuse it."""
    probe = "The quick brown fox jumps over the lazy dog"
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    if len(set(ids)) < 3:
        raise ModelError(f"{where}: the tokenizer encodes text to {ids!r}; the folder lacks working tokenizer "
                         "files (tokenizer.json, or vocab and merges)")


# --- LoRA / QLoRA -----------------------------------------------------------------------------------------


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    # Non-reentrant checkpointing: gradients reach LoRA weights even though the (frozen) inputs need no grad,
    # so no enable_input_require_grads hook is needed.
    backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def build_model(cfg) -> Tuple[EmbeddingModel, Any]:
    """(EmbeddingModel, tokenizer) from a validated ``Config``: load, bidirectional, checkpointing, LoRA."""
    if cfg.lora_adapter_path and not cfg.lora_enabled:
        raise ModelError("lora_adapter_path is set but lora_enabled=false; set lora_enabled=true to continue "
                         "training that adapter")
    if cfg.init_from:
        backbone, tokenizer, extras, source = _start_from(cfg)
    else:
        backbone = load_backbone(cfg.model_path, cfg.gguf_file, cfg.torch_dtype, cfg.attn_implementation,
                                 cfg.quantization, cfg.cache_dir, cfg.attention_dropout)
        tokenizer = load_tokenizer(cfg.model_path, cfg.gguf_file, cfg.cache_dir)
        extras, source = {}, source_settings(cfg.model_path, cfg.gguf_file)
    if cfg.num_layers:
        keep_layers(backbone, cfg.num_layers)
    set_bidirectional(backbone, cfg.bi_attn_enabled)
    if cfg.quantization != "none":
        from peft import prepare_model_for_kbit_training

        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(backbone)
    if cfg.lora_enabled:
        from l2e.model.lora import apply_lora, compact_lora_dropout, fuse_lora_add

        backbone = apply_lora(backbone, cfg)
        compact_lora_dropout(backbone)
        if cfg.lora_fused_add:
            fuse_lora_add(backbone)
    model = EmbeddingModel(backbone, ModelSettings.from_config(cfg, tokenizer.all_special_ids, source))
    _carry_extras(model, extras)
    return model, tokenizer


def keep_layers(backbone: nn.Module, n: int) -> None:
    """Keep the first ``n`` decoder layers: the embedding comes from an intermediate layer (cheaper steps; the
    later layers of a decoder specialise in next-token prediction, and embeddings often lose little without
    them). The saved config says ``num_hidden_layers = n``, so every loader builds the shorter model."""
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ModelError(f"num_layers={n}: this {backbone.config.model_type} model keeps no .layers list to shorten")
    if not 0 < n <= len(layers):
        raise ModelError(f"num_layers={n} must be between 1 and the model's {len(layers)} layers")
    backbone.layers = nn.ModuleList(list(layers)[:n])
    backbone.config.num_hidden_layers = n
    if isinstance(getattr(backbone.config, "layer_types", None), list):  # per-layer attention kinds (Qwen3)
        backbone.config.layer_types = backbone.config.layer_types[:n]


def _start_from(cfg):
    """``init_from``: the weights of an earlier stage (a full model, or an adapter merged into its base)."""
    if cfg.quantization != "none":
        raise ModelError("init_from cannot be combined with quantization (QLoRA loads its base from model_path)")
    start, tokenizer = load_embedding_model(cfg.init_from, cfg.torch_dtype, cfg.attn_implementation,
                                            attention_dropout=cfg.attention_dropout)
    backbone = start.backbone
    if start.is_adapter:
        if cfg.lora_enabled:
            # A new adapter needs its base on disk (checkpoints save only the adapter); the merged base exists
            # only in memory here. The run's final/ is that base, merged (lora_merge_on_export).
            raise ModelError(f"init_from={cfg.init_from!r} is a LoRA adapter; to train a new adapter start from the "
                             "merged model (that run's final/), or continue this adapter with lora_adapter_path")
        backbone = start.merge_adapter().backbone
    backbone.train()
    return backbone, tokenizer, start.extras(), source_settings(cfg.init_from)


def _carry_extras(model: EmbeddingModel, extras: Dict[str, torch.Tensor]) -> None:
    """Heads and trainable pooling an earlier stage trained, where this stage has the same ones (same shapes);
    ``model.carried_extras`` names them (what the trainer must not initialise again)."""
    mine = model.extras()  # keys "heads.<...>" / "pooler.<...>", as in the model's own state dict
    carried = {k: v for k, v in extras.items() if k in mine and mine[k].shape == v.shape}
    if carried:
        model.load_state_dict(carried, strict=False)
    model.carried_extras = frozenset(carried)


def _is_kbit(backbone: nn.Module) -> bool:
    base = backbone.get_base_model() if _is_peft(backbone) else backbone
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def _reload_unquantized(model: EmbeddingModel) -> nn.Module:
    from l2e.model.lora import load_adapter

    tmp = tempfile.mkdtemp(prefix="l2e_adapter_")
    try:
        model.backbone.save_pretrained(tmp)
        base = load_backbone(model.settings.base_model_path, model.settings.gguf_file)
        set_bidirectional(base, is_bidirectional(model.backbone))
        return load_adapter(base, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_embedding_model(ckpt_dir: str, torch_dtype: str = "auto", attn_implementation: str = "sdpa",
                         attention_dropout: float = 0.0, **overrides) -> Tuple[EmbeddingModel, Any]:
    """Read back a folder written by ``EmbeddingModel.save``: (model in eval mode, tokenizer).

    ``overrides`` replace saved :class:`ModelSettings` values, e.g. ``pooling_mode="mean"``.
    """
    settings = ModelSettings.load(ckpt_dir).replace(**overrides)
    if settings.is_adapter:
        from l2e.model.lora import fuse_lora_add, load_adapter

        base = load_backbone(settings.base_model_path, settings.gguf_file, torch_dtype, attn_implementation,
                             attention_dropout=attention_dropout)
        set_bidirectional(base, settings.bi_attn_enabled)
        try:
            backbone = load_adapter(base, ckpt_dir)
        except Exception as e:  # noqa: BLE001 -- a damaged adapter file
            raise _load_error(ckpt_dir, None, "LoRA adapter", e) from e
        fuse_lora_add(backbone)  # encoding an unmerged checkpoint: the adapter added in place, as in training
    else:
        backbone = load_backbone(ckpt_dir, "", torch_dtype, attn_implementation, attention_dropout=attention_dropout)
        set_bidirectional(backbone, settings.bi_attn_enabled)
    model = EmbeddingModel(backbone, settings)
    model.load_heads(ckpt_dir)
    return model.eval(), load_tokenizer(ckpt_dir)
