"""LoRA: the fused dropout keeps a 1-byte mask instead of a float copy, with peft's gradients."""
import torch
import torch.nn.functional as F

from helpers_models import tiny_config
from l2e.lora import DropoutLinear, compact_lora_dropout
from l2e.model import build_model


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
