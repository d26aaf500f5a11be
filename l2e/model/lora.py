"""LoRA through peft: adapters on a frozen base, their one-line errors, and a leaner LoRA dropout.

peft's LoRA computes ``lora_B(lora_A(dropout(x)))`` per adapted module. ``lora_A`` keeps the dropped copy of
``x`` for its backward, so q, k, v (same ``x``), gate and up (same ``x``), o and down each hold a float copy plus
dropout's mask: at batch 32 on SmolLM2 that was ~30 KB per token per layer. :func:`compact_lora_dropout` gives
each ``lora_A`` a fused dropout-then-linear that keeps ``x`` itself (one shared reference) and a 1-byte mask,
recomputing ``dropout(x)`` in the backward pass. Written by hand: peft has no such option. The masks follow
torch's global RNG (:func:`dropout_keep_mask`), so resuming and GradCache's replay see the same masks.

peft then adds the adapter as ``result + lora_B(h) * scaling``: three new activations of the output's size per
adapted module (``lora_B``'s output, its scaled copy, the sum), each written and read once and freed within the
module. :func:`fuse_lora_add` adds ``scaling * h @ B^T`` into the base layer's output in place (one ``addmm_``):
the same sum, with none of those three -- less memory traffic, and fewer short-lived blocks for glibc's heap to
fragment on (see README, Performance).
"""
from __future__ import annotations

import contextlib
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from l2e.core.errors import ModelError, one_line


# Per-architecture default targets (``lora_target_modules: ["auto"]``): every projection of attention and MLP,
# the set LoRA papers and peft's "all-linear" mean. DeepSeek-V3's multi-head latent attention has no q/k/v_proj:
# its query goes through q_a/q_b (q_proj when q_lora_rank is unset), keys and values through kv_a/kv_b.
AUTO_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3_moe": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "deepseek_v3": ["q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj",
                    "up_proj", "down_proj"],
}
MLP_NAMES = ("gate_proj", "up_proj", "down_proj")
NOT_ADAPTED = ("lm_head", "score", "gate")  # output head, classifier, MoE router: never LoRA targets by default


def _linear_names(model: nn.Module) -> list:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def _families(backbone: nn.Module) -> dict:
    """``{parent class name: {linear attribute names}}``: the projections that belong together (one attention
    block, one MLP), by the class of the module that holds them."""
    modules = dict(backbone.named_modules())
    families: dict = {}
    for name, module in modules.items():
        if isinstance(module, nn.Linear) and "." in name:
            parent, _, attr = name.rpartition(".")
            if attr not in NOT_ADAPTED:
                families.setdefault(type(modules[parent]).__name__, set()).add(attr)
    return families


def _fused_experts(backbone: nn.Module) -> list:
    """Suffixes of transformers 5's fused MoE expert weights (3-D parameters), e.g. ``experts.gate_up_proj``."""
    return sorted({".".join(n.split(".")[-2:]) for n, p in backbone.named_parameters()
                   if p.ndim == 3 and ".experts." in n})


def resolve_targets(backbone: nn.Module, cfg) -> tuple:
    """``(target_modules, target_parameters)`` for ``cfg.lora_target_modules`` on this backbone.

    ``["auto"]`` takes the architecture's projections (``AUTO_TARGETS``). An explicit list that adapts some of a
    block's projections but not the others (DeepSeek-V3 given Llama's q/k/v names: only ``o_proj`` would match)
    is refused, naming the ones left out, unless ``lora_allow_partial`` says it is meant. MLP names reach the
    fused MoE experts through ``target_parameters`` (peft's own mapping for them, made explicit).
    """
    model_type = backbone.config.model_type
    names = list(cfg.lora_target_modules)
    present = set(_linear_names(backbone))
    if names == ["auto"]:
        if model_type not in AUTO_TARGETS:
            raise ModelError(f"lora_target_modules=[\"auto\"] has no default for model_type {model_type!r}; name the "
                             f"modules, from its linear layers: {', '.join(sorted(present))}")
        names = [n for n in AUTO_TARGETS[model_type] if n in present]
    elif not getattr(cfg, "lora_allow_partial", False):
        missing = sorted({attr for attrs in _families(backbone).values() if attrs & set(names)
                          for attr in attrs - set(names)})
        if missing:
            raise ModelError(f"lora_target_modules={list(cfg.lora_target_modules)} adapt only part of this "
                             f"{model_type} model's projections: {', '.join(missing)} would get no adapter; add "
                             "them, use [\"auto\"], or set lora_allow_partial=true if that is meant")
    experts = _fused_experts(backbone) if set(names) & set(MLP_NAMES) else []
    return names, experts


def coverage(backbone: nn.Module) -> tuple:
    """``(adapted, left out)``: attribute names of linear layers (and fused expert weights) with and without a
    LoRA adapter, for the start-up line."""
    from peft.tuners.lora import LoraLayer

    modules = dict(backbone.named_modules())
    # A LoRA layer owns its base layer and its lora_A/lora_B linears; a nested one (fused experts) is named
    # ``.../experts.base_layer`` and counts for its owner.
    wrapped = [n for n, m in modules.items() if isinstance(m, LoraLayer)]
    adapted = {n.rsplit(".", 2)[-2] if n.endswith(".base_layer") else n.rsplit(".", 1)[-1] for n in wrapped}
    inside = tuple(n + "." for n in wrapped)
    left = {n.rsplit(".", 1)[-1] for n, m in modules.items()
            if isinstance(m, nn.Linear) and n not in wrapped and not n.startswith(inside)}
    return sorted(adapted), sorted(left - adapted)


@contextlib.contextmanager
def _native_targets():
    """peft >= 0.18 rewrites LoRA configs for transformers 5 so that adapters trained on transformers 4 still
    load: on MoE models it moves ``gate_proj``/``up_proj``/``down_proj`` from module targets to the fused experts,
    which silently leaves the dense layers' MLP and the shared experts without adapters. l2e's adapters are
    made and read on transformers 5 with explicit targets, so that rewrite is switched off around peft's calls."""
    from unittest import mock

    import peft.utils.transformers_weight_conversion as conversion

    with mock.patch.object(conversion, "convert_peft_config_for_transformers", lambda *a, **k: None):
        yield


def load_adapter(base: nn.Module, path: str, **kwargs) -> nn.Module:
    """``PeftModel.from_pretrained`` with the targets the adapter was saved with (see :func:`_native_targets`)."""
    from peft import PeftModel

    with _native_targets():
        return PeftModel.from_pretrained(base, path, **kwargs)


def apply_lora(backbone: nn.Module, cfg) -> nn.Module:
    """Wrap ``backbone`` with LoRA adapters (new, or continued from ``cfg.lora_adapter_path``)."""
    from peft import LoraConfig, get_peft_model

    if cfg.lora_adapter_path:
        try:
            model = load_adapter(backbone, cfg.lora_adapter_path, is_trainable=True)
        except Exception as e:  # noqa: BLE001 -- a foreign or damaged adapter folder
            raise ModelError(f"lora_adapter_path={cfg.lora_adapter_path!r}: cannot load a LoRA adapter "
                             f"({type(e).__name__}: {one_line(str(e))[:300]})") from e
    else:
        modules, parameters = resolve_targets(backbone, cfg)
        lora = LoraConfig(task_type=cfg.lora_task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias, target_modules=modules,
                          target_parameters=parameters or None)
        try:
            with _native_targets():
                model = get_peft_model(backbone, lora)
        except ValueError as e:
            raise _lora_error(e, cfg, backbone) from None
    adapted, left = coverage(model)
    model.l2e_lora_coverage = (f"lora: adapters on {', '.join(adapted)}; linear layers without an adapter: "
                               f"{', '.join(left) or 'none'}")
    return model


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




# Mask draws on CPU: torch's CPU generator (mt19937) draws one element at a time on one thread, ~3 ns each; at the
# recipe's shapes LoRA dropout's masks were ~15% of a step. numpy's PCG64 fills 16-bit integers ~3x faster. Its
# seed is drawn from torch's global generator, so torch.manual_seed, a resumed run and GradCache's replay (which
# restores torch's RNG state) get the same masks as before. p is taken in steps of 1/65536 and the kept values
# are scaled by the exact 1/(1 - p') of that step, so the expectation stays x.
_MASK_STEPS = 1 << 16


def dropout_keep_mask(x: torch.Tensor, p: float):
    """``(keep, scale)``: a bool mask of ``x``'s shape, True with probability 1 - p, and the factor that keeps
    ``x * keep * scale`` unbiased."""
    if x.device.type != "cpu":
        return torch.rand_like(x, dtype=torch.float32) >= p, 1.0 / (1.0 - p)
    drop = round(p * _MASK_STEPS)
    seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    draw = np.random.Generator(np.random.PCG64(seed)).integers(
        -_MASK_STEPS // 2, _MASK_STEPS // 2, size=tuple(x.shape), dtype=np.int16)
    return torch.from_numpy(draw) >= drop - _MASK_STEPS // 2, _MASK_STEPS / (_MASK_STEPS - drop)


class DropoutLinear(torch.autograd.Function):
    """``F.linear(dropout(x, p), weight)`` saving ``x`` (no copy) and a bool mask, not the dropped copy. The
    dropout's scale is applied to the rank-r output (and to the small gradients), not to ``x``: one pass over the
    input fewer."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        keep, scale = dropout_keep_mask(x, p)  # (..., in) bool: 1 byte per element
        ctx.save_for_backward(x, keep, weight)
        ctx.scale = scale
        return F.linear(x * keep, weight) * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, keep, weight = ctx.saved_tensors
        grad_x = grad_w = None
        # Under bf16 autocast the forward's matmul ran in bf16 (grad is bf16) while x and weight keep their own
        # dtypes: compute in grad's dtype, as autocast did, and hand each input a gradient of its own dtype.
        grad = grad * ctx.scale  # rank-r: cheap, and d(out)/d(dropped x) carries the scale
        if ctx.needs_input_grad[0]:
            grad_x = ((grad @ weight.to(grad.dtype)) * keep).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dropped = (x * keep).reshape(-1, x.shape[-1]).to(grad.dtype)  # recomputed: elementwise
            grad_w = (grad.reshape(-1, grad.shape[-1]).T @ dropped).to(weight.dtype)
        return grad_x, grad_w, None


def _fused_forward(lora_a: nn.Linear, p: float):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if lora_a.training and p > 0 and torch.is_grad_enabled():
            return DropoutLinear.apply(x, lora_a.weight, p)
        if lora_a.training and p > 0:  # no graph (GradCache's first pass): same masks, nothing to save
            keep, scale = dropout_keep_mask(x, p)
            return F.linear(x * keep, lora_a.weight) * scale
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


def _fused_add_forward(module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's ``lora.Linear.forward`` for one plain adapter, with the adapter's product added into the base output
    in place; anything else (merged or disabled adapters, several active adapters, DoRA and other variants, mixed
    batches, extra arguments) goes to peft's own forward."""
    active = module.active_adapters
    if (args or kwargs or module.disable_adapters or module.merged or len(active) != 1
            or active[0] not in module.lora_A or active[0] in module.lora_variant):
        return type(module).forward(module, x, *args, **kwargs)
    name = active[0]
    lora_a, lora_b = module.lora_A[name], module.lora_B[name]
    result = module.base_layer(x.reshape(-1, x.shape[-1]))
    h = lora_a(module.lora_dropout[name](module._cast_input_dtype(x, lora_a.weight.dtype)))
    h = h.reshape(-1, h.shape[-1])
    if h.dtype != result.dtype:  # e.g. a bf16 base with fp32 adapters, no autocast: peft's sum, in h's dtype
        result = (result + lora_b(h) * module.scaling[name]).to(result.dtype)
    else:
        # The base layer's output is a new tensor that autograd does not keep (a linear layer's backward needs its
        # input and weight), so adding into it is safe. In-place ops are not autocast: under bf16 autocast h and
        # the output are bf16 and lora_B's weight is cast here, as autocast casts it for lora_B's matmul.
        result.addmm_(h, lora_b.weight.to(result.dtype).t(), alpha=module.scaling[name])
    return result.view(*x.shape[:-1], result.shape[-1])


def fuse_lora_add(backbone: nn.Module) -> int:
    """Give every peft LoRA linear layer on a plain ``nn.Linear`` the in-place add (:func:`_fused_add_forward`);
    returns how many changed. Parameters, state-dict keys, merging and saving are peft's, untouched."""
    from peft.tuners.lora import Linear as LoraLinear

    changed = 0
    for module in backbone.modules():
        if (type(module) is LoraLinear and type(module.base_layer) is nn.Linear and not module.fan_in_fan_out
                and all(b.bias is None for b in module.lora_B.values())):
            # A bound method, not a closure: a deep copy of the model rebinds it to the copy.
            module.forward = types.MethodType(_fused_add_forward, module)
            changed += 1
    return changed
