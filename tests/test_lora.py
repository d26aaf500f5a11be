"""LoRA: the fused dropout keeps a 1-byte mask instead of a float copy, with peft's gradients."""
import torch
import torch.nn.functional as F

from helpers_models import tiny_config
from l2e.model.embedding_model import build_model
from l2e.model.lora import DropoutLinear, compact_lora_dropout, dropout_keep_mask


def test_dropout_linear_gradients_equal_dropout_then_linear():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(7)
    fused = DropoutLinear.apply(x, w, 0.3)
    torch.manual_seed(7)
    keep, scale = dropout_keep_mask(x, 0.3)  # the same draw
    reference = F.linear(x * keep * scale, w)
    torch.testing.assert_close(fused, reference)
    gy = torch.randn_like(fused)
    torch.testing.assert_close(torch.autograd.grad(fused, [x, w], gy), torch.autograd.grad(reference, [x, w], gy))


def test_keep_mask_rate_scale_and_seeding():
    x = torch.zeros(1000, 1000)
    torch.manual_seed(1)
    keep, scale = dropout_keep_mask(x, 0.05)
    assert keep.shape == x.shape and keep.dtype == torch.bool
    drop = round(0.05 * 65536) / 65536  # p in steps of 1/65536; the scale is that step's exact inverse
    assert scale == 1 / (1 - drop)
    assert abs(keep.float().mean().item() - (1 - drop)) < 4 * (drop * (1 - drop) / x.numel()) ** 0.5  # 4 sigma
    torch.manual_seed(1)
    assert torch.equal(dropout_keep_mask(x, 0.05)[0], keep)  # torch's seed decides the mask
    assert not torch.equal(dropout_keep_mask(x, 0.05)[0], keep)  # and the next draw is a new one
    rows = keep[:, :500].float().mean(1)  # no structure along either axis
    assert rows.std().item() < 3 * (drop * (1 - drop) / 500) ** 0.5
    assert dropout_keep_mask(x, 0.0)[0].all() and dropout_keep_mask(x, 0.0)[1] == 1.0


def saved_bytes(fn):
    """Bytes autograd keeps for the backward of fn() (each storage once)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def test_compact_lora_dropout_keeps_less_and_trains_the_same_way():
    torch.manual_seed(0)
    plain, tok = build_model(tiny_config("qwen3", lora_enabled=True, lora_dropout=0.1))
    for module in plain.backbone.modules():  # undo the compaction build_model applied, for the comparison
        if hasattr(module, "lora_A") and hasattr(module, "lora_dropout"):
            for name, lora_a in module.lora_A.items():
                lora_a.__dict__.pop("forward", None)
                module.lora_dropout[name] = torch.nn.Dropout(0.1)
    compact, _ = build_model(tiny_config("qwen3", lora_enabled=True, lora_dropout=0.1))
    compact.load_state_dict(plain.state_dict())
    ids = torch.randint(3, 1000, (4, 48))
    mask = torch.ones_like(ids)
    plain.train(), compact.train()
    before, _ = saved_bytes(lambda: plain(ids, mask))
    after, out = saved_bytes(lambda: compact(ids, mask))
    assert after < 0.8 * before, (after, before)
    out.sum().backward()
    assert all(p.grad is not None for n, p in compact.named_parameters() if "lora_" in n)
    compact.eval(), plain.eval()  # no dropout: identical outputs
    with torch.no_grad():
        torch.testing.assert_close(compact(ids, mask), plain(ids, mask))
    assert compact_lora_dropout(compact.backbone) == 0  # already compact: nothing left to change


def test_adapter_keys_unchanged_by_compaction(tmp_path):
    model, tok = build_model(tiny_config("qwen3", lora_enabled=True, lora_dropout=0.1))
    model.save(str(tmp_path), tok)
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    assert not any("dropout" in k for k in keys)


# --- which layers get an adapter -------------------------------------------------------------------------------

import pytest  # noqa: E402

from l2e.core.errors import ModelError  # noqa: E402
from l2e.model.lora import coverage  # noqa: E402

DEEPSEEK_PROJECTIONS = ["down_proj", "gate_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "q_a_proj", "q_b_proj",
                        "up_proj"]


def adapted_paths(model):
    from peft.tuners.lora import LoraLayer

    return {n.split("base_model.model.")[-1] for n, m in model.backbone.named_modules() if isinstance(m, LoraLayer)}


def test_deepseek_auto_targets_cover_mla_the_dense_mlp_shared_and_routed_experts():
    """peft's transformers-5 rewrite used to leave MLA's projections, layer 0's dense MLP and the shared experts
    without adapters; "auto" adapts every projection, and the routed experts through their fused weights."""
    model, _ = build_model(tiny_config("deepseek_v3", lora_enabled=True, lora_dropout=0.0))
    paths = adapted_paths(model)
    for layer in ("layers.0", "layers.1"):
        for proj in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"):
            assert f"{layer}.self_attn.{proj}" in paths
    assert {"layers.0.mlp.gate_proj", "layers.0.mlp.up_proj", "layers.0.mlp.down_proj"} <= paths  # dense layer
    assert {"layers.1.mlp.shared_experts.gate_proj", "layers.1.mlp.shared_experts.down_proj"} <= paths
    assert "layers.1.mlp.experts" in paths  # routed experts (fused 3-D weights)
    adapted, left = coverage(model.backbone)
    assert set(DEEPSEEK_PROJECTIONS) | {"experts"} <= set(adapted) and left == []
    assert model.backbone.l2e_lora_coverage.endswith("linear layers without an adapter: none")


def test_deepseek_adapter_round_trips_with_every_adapter(tmp_path):
    from l2e.model.embedding_model import load_embedding_model

    model, tok = build_model(tiny_config("deepseek_v3", lora_enabled=True, lora_dropout=0.0, pooling_mode="mean"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save(str(tmp_path), tok)
    loaded, _ = load_embedding_model(str(tmp_path))
    assert adapted_paths(loaded) == adapted_paths(model)
    ids = torch.randint(3, 500, (2, 12))
    mask = torch.ones_like(ids)
    model.eval()
    torch.testing.assert_close(loaded(ids, mask), model(ids, mask))


def test_llama_target_list_on_deepseek_is_refused_naming_what_it_leaves_out():
    with pytest.raises(ModelError, match=r"adapt only part of this deepseek_v3 model's projections: "
                       r"kv_a_proj_with_mqa, kv_b_proj, q_a_proj, q_b_proj would get no adapter"):
        build_model(tiny_config("deepseek_v3", lora_enabled=True, lora_dropout=0.0,
                                lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"]))


def test_partial_targets_on_purpose_are_allowed_and_reported():
    model, _ = build_model(tiny_config("llama", lora_enabled=True, lora_target_modules=["q_proj", "v_proj"],
                                       lora_allow_partial=True))
    assert model.backbone.l2e_lora_coverage == ("lora: adapters on q_proj, v_proj; linear layers without an adapter: "
                                                "down_proj, gate_proj, k_proj, o_proj, up_proj")
    with pytest.raises(ModelError, match=r"k_proj, o_proj would get no adapter"):
        build_model(tiny_config("llama", lora_enabled=True, lora_target_modules=["q_proj", "v_proj", "gate_proj",
                                                                                 "up_proj", "down_proj"]))


# --- the adapter added in place (fuse_lora_add) -----------------------------------------------------------------

import copy  # noqa: E402

from l2e.model.lora import _fused_add_forward, fuse_lora_add  # noqa: E402


def _pair(**overrides):
    torch.manual_seed(0)
    fused, tok = build_model(tiny_config("qwen3", lora_enabled=True, **overrides))
    for name, p in fused.named_parameters():  # lora_B starts at zero: give the adapter something to add
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    plain, _ = build_model(tiny_config("qwen3", lora_enabled=True, lora_fused_add=False, **overrides))
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def _grads(model, ids, mask, autocast):
    model.zero_grad()
    torch.manual_seed(3)  # the same dropout masks in both models
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = model(ids, mask)
    (out.float() ** 2).sum().backward()
    return out.float(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_add_gives_peft_outputs_and_gradients(autocast):
    fused, plain = _pair(lora_dropout=0.1)
    adapted = [m for m in fused.backbone.modules() if "lora_A" in m._modules]
    assert adapted and all(getattr(m.__dict__.get("forward"), "__func__", None) is _fused_add_forward for m in adapted)
    assert all("forward" not in m.__dict__ for m in plain.backbone.modules() if "lora_A" in m._modules)
    ids, mask = torch.randint(3, 1000, (4, 24)), torch.ones(4, 24, dtype=torch.long)
    fused.train(), plain.train()
    out_f, g_f = _grads(fused, ids, mask, autocast)
    out_p, g_p = _grads(plain, ids, mask, autocast)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_f, out_p, **tol)
    assert g_f.keys() == g_p.keys() and any("lora_A" in n for n in g_f)
    for name in g_f:
        scale = g_p[name].abs().max().clamp_min(1e-6)
        assert ((g_f[name] - g_p[name]).abs().max() / scale) < (5e-2 if autocast else 1e-4), name


def test_fused_add_leaves_other_cases_to_peft():
    fused, plain = _pair(lora_dropout=0.0)
    ids, mask = torch.randint(3, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    fused.eval(), plain.eval()
    with torch.no_grad():
        reference = plain(ids, mask)
        with fused.backbone.disable_adapter():  # peft's path: the base alone
            base_only = fused(ids, mask)
        assert not torch.allclose(base_only, reference)
        torch.testing.assert_close(fused(ids, mask), reference)
        fused.backbone.merge_adapter()  # merged: the base layer already holds the adapter
        torch.testing.assert_close(fused(ids, mask), reference, rtol=1e-4, atol=1e-5)
        fused.backbone.unmerge_adapter()
        twin = copy.deepcopy(fused)  # the bound forward follows the copy, not the original's weights
        for name, p in twin.named_parameters():
            if "lora_B" in name:
                p.zero_()
        torch.testing.assert_close(twin(ids, mask), base_only)
        torch.testing.assert_close(fused(ids, mask), reference)
    assert fuse_lora_add(plain.backbone) > 0


def test_fused_add_with_fp32_adapters_on_a_bf16_base_sums_as_peft():
    fused, plain = _pair(lora_dropout=0.0, torch_dtype="bfloat16")
    lora_b = next(p for n, p in fused.named_parameters() if "lora_B" in n)
    base = next(p for n, p in fused.named_parameters() if "q_proj.base_layer" in n)
    assert (lora_b.dtype, base.dtype) == (torch.float32, torch.bfloat16)  # peft keeps adapters in fp32
    ids, mask = torch.randint(3, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    fused.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(ids, mask), plain(ids, mask))
