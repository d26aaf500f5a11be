"""LoRA: the fused dropout keeps a 1-byte mask instead of a float copy, with peft's gradients."""
import torch
import torch.nn.functional as F

from helpers_models import tiny_config
from l2e.model.embedding_model import build_model
from l2e.model.lora import DropoutLinear, compact_lora_dropout


def test_dropout_linear_gradients_equal_dropout_then_linear():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(7)
    fused = DropoutLinear.apply(x, w, 0.3)
    torch.manual_seed(7)
    keep = torch.rand_like(x) >= 0.3  # the same draw
    reference = F.linear(x * keep / 0.7, w)
    torch.testing.assert_close(fused, reference)
    gy = torch.randn_like(fused)
    torch.testing.assert_close(torch.autograd.grad(fused, [x, w], gy), torch.autograd.grad(reference, [x, w], gy))


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
