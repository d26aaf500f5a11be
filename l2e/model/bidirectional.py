"""Bidirectional attention for decoder-only LLMs (LLM2Vec, NV-Embed, GritLM: every token sees the whole text).

transformers >= 5 builds every attention mask through ``masking_utils.create_causal_mask``, which returns a
bidirectional (padding-only) mask when ``config.is_causal`` is False, and passes ``is_causal`` on to the
sdpa / flash-attention kernels. So for the architectures below, flipping the config flag is the whole
change: no patched modules, and ``config.json`` carries the flag through save -> load. Each supported
``model_type`` is registered in ``BIDIRECTIONAL`` after tests proved that a later token changes an earlier
token's state (``tests/test_bidirectional.py``); an architecture whose modeling code builds its own mask
would silently stay causal, hence the explicit list.
"""
from __future__ import annotations

from typing import Callable, Dict

from l2e.core.errors import ModelError
from l2e.core.registry import make_register

BIDIRECTIONAL: Dict[str, Callable] = {}
register = make_register(BIDIRECTIONAL, "bidirectional architecture")


@register("qwen3")
@register("qwen2")
@register("llama")
@register("mistral")
@register("deepseek_v3")
def _via_config_is_causal(config, enabled: bool) -> None:
    config.is_causal = not enabled


def _config(model):
    # A peft wrapper forwards ``.config`` to the base model, so this works before and after LoRA.
    return model.config


def set_bidirectional(model, enabled: bool) -> None:
    """Make ``model`` attend bidirectionally (``enabled``) or causally; refuse unsupported architectures."""
    config = _config(model)
    model_type = getattr(config, "model_type", "?")
    setter = BIDIRECTIONAL.get(model_type)
    if setter is None:
        if enabled:
            raise ModelError(
                f"bi_attn_enabled=true is not supported for model_type {model_type!r}; "
                f"supported: {', '.join(sorted(BIDIRECTIONAL))}. Set bi_attn_enabled=false."
            )
        return  # encoders (BERT) are bidirectional by construction; nothing to switch off
    setter(config, enabled)


def is_bidirectional(model) -> bool:
    """True when a supported decoder has its causal mask removed."""
    config = _config(model)
    return config.model_type in BIDIRECTIONAL and not getattr(config, "is_causal", True)
