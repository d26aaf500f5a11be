"""LoRA through peft: adapters on a frozen base, their one-line errors, and a leaner LoRA dropout.

peft's LoRA computes ``lora_B(lora_A(dropout(x)))`` per adapted module. ``lora_A`` keeps the dropped copy of
``x`` for its backward, so q, k, v (same ``x``), gate and up (same ``x``), o and down each hold a float copy plus
dropout's mask: at batch 32 on SmolLM2 that was ~30 KB per token per layer. :func:`compact_lora_dropout` gives
each ``lora_A`` a fused dropout-then-linear that keeps ``x`` itself (one shared reference) and a 1-byte mask,
recomputing ``dropout(x)`` in the backward pass. Written by hand: peft has no such option. The masks are drawn
from torch's global RNG, so resuming and GradCache's replay see the same masks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from l2e.errors import ModelError, one_line


def _linear_names(model: nn.Module) -> list:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def apply_lora(backbone: nn.Module, cfg) -> nn.Module:
    """Wrap ``backbone`` with LoRA adapters (new, or continued from ``cfg.lora_adapter_path``)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if cfg.lora_adapter_path:
        try:
            return PeftModel.from_pretrained(backbone, cfg.lora_adapter_path, is_trainable=True)
        except Exception as e:  # noqa: BLE001 -- a foreign or damaged adapter folder
            raise ModelError(f"lora_adapter_path={cfg.lora_adapter_path!r}: cannot load a LoRA adapter "
                             f"({type(e).__name__}: {one_line(str(e))[:300]})") from e
    lora = LoraConfig(task_type=cfg.lora_task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias, target_modules=list(cfg.lora_target_modules))
    try:
        return get_peft_model(backbone, lora)
    except ValueError as e:
        raise _lora_error(e, cfg, backbone) from None


def _lora_error(err: ValueError, cfg, backbone: nn.Module) -> Exception:
    """peft's errors restated in config terms (what to change in the JSON)."""
    targets, model_type = list(cfg.lora_target_modules), backbone.config.model_type
    if "not found in the base model" in str(err):
        return ModelError(f"lora_target_modules={targets} match no layer of this {model_type} model; "
                          f"its linear layers are: {', '.join(_linear_names(backbone))}")
    if "lora_dropout != 0" in str(err):
        # transformers 5 fuses MoE experts (DeepSeek-V3, Qwen3-MoE) into 3-D parameters; peft maps
        # gate_proj/up_proj/down_proj onto them with a wrapper that cannot apply dropout.
        return ModelError(f"lora_dropout={cfg.lora_dropout} cannot be used on the fused MoE experts of this "
                          f"{model_type} model (targeted through gate_proj/up_proj/down_proj); set lora_dropout=0, "
                          "or drop those names from lora_target_modules to adapt attention only")
    return err




class DropoutLinear(torch.autograd.Function):
    """``F.linear(dropout(x, p), weight)`` saving ``x`` (no copy) and a bool mask, not the dropped copy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand_like(x) >= p  # (..., in) bool: 1 byte per element, the float draw is freed at once
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(x, keep, weight)
        ctx.scale = scale
        return F.linear(x * keep * scale, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, keep, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight) * keep * ctx.scale
        if ctx.needs_input_grad[1]:
            dropped = (x * keep * ctx.scale).reshape(-1, x.shape[-1])  # recomputed: elementwise, cheap
            grad_w = grad.reshape(-1, grad.shape[-1]).T @ dropped
        return grad_x, grad_w, None


def _fused_forward(lora_a: nn.Linear, p: float):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if lora_a.training and p > 0 and torch.is_grad_enabled():
            return DropoutLinear.apply(x, lora_a.weight, p)
        if lora_a.training and p > 0:  # no graph (GradCache's first pass): same masks, nothing to save
            return F.linear(x * (torch.rand_like(x) >= p) / (1.0 - p), lora_a.weight)
        return F.linear(x, lora_a.weight)

    return forward


def compact_lora_dropout(backbone: nn.Module) -> int:
    """Give every LoRA ``lora_A`` with dropout the fused forward; returns how many modules changed.

    The adapter's parameters and state-dict keys are untouched (only ``lora_dropout`` becomes an identity and
    ``lora_A.forward`` is the instance's own), so saving, loading and merging work as with plain peft.
    """
    from peft.tuners.lora import LoraLayer

    changed = 0
    for module in backbone.modules():
        if not isinstance(module, LoraLayer) or not hasattr(module, "lora_dropout"):
            continue
        for name, dropout in list(module.lora_dropout.items()):
            lora_a = module.lora_A[name] if name in module.lora_A else None
            if not isinstance(dropout, nn.Dropout) or dropout.p == 0 or type(lora_a) is not nn.Linear or lora_a.bias is not None:
                continue
            lora_a.forward = _fused_forward(lora_a, dropout.p)
            module.lora_dropout[name] = nn.Identity()
            changed += 1
    return changed
