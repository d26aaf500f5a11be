"""memory_budget_gb: measured bytes per layer, the fewest checkpointed layers that fit, same training results."""
import dataclasses

import pytest
import torch

import run
from helpers_models import tiny_config, tiny_qwen3
from helpers_train import make_training_data, read_log, train_rows, write_config
from l2e.train.memory import (GB, MemoryBudgetError, apply_checkpointing, decoder_layers, plan_checkpointing,
                        probe_layer_memory, saved_bytes)
from l2e.model.embedding_model import build_model


@pytest.fixture(scope="module")
def built():
    return build_model(tiny_config("qwen3", lora_enabled=True, lora_dropout=0.0, max_seq_length=64))


def test_saved_bytes_counts_each_storage_once():
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8, 8)
    assert saved_bytes(lambda: (x * x).sum()) == 4 * 8 * 4  # mul saves x twice: one storage
    assert saved_bytes(lambda: (x @ w).sum()) == 8 * 8 * 4  # a frozen w: only w is kept (for x's gradient)


def test_per_layer_bytes_are_activations_not_weights(built):
    model, _ = built
    short, long = probe_layer_memory(model, 16, "cpu")[0], probe_layer_memory(model, 64, "cpu")[0]
    # The weights autograd references are not counted, so the per-token cost does not shrink with length.
    assert 0 < short and abs(short - long) / long < 0.2


def test_bf16_probe_counts_per_token_memory_not_the_weight_copies(built):
    """Under bf16 autocast each layer keeps bf16 copies of its weights once per step: the probe separates them
    from the per-token cost, which must match what a real-sized batch adds per token."""
    from l2e.model.precision import Precision, autocast

    model, _ = built
    bf16 = Precision("bf16", "test")
    per_token, per_step = probe_layer_memory(model, 16, "cpu", bf16)
    weights = frozenset(t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()])
    layers = len(decoder_layers(model.backbone))

    def kept(rows):
        ids = torch.randint(10, 1000, (rows, 16))
        with autocast(bf16, "cpu"):
            return saved_bytes(lambda: model(ids, torch.ones_like(ids)), exclude=weights) / layers

    marginal = (kept(32) - kept(16)) / (16 * 16)
    assert per_token == pytest.approx(marginal, rel=0.05)
    one_probe = kept(2) / (2 * 16)  # what a single 2-text probe called per-token memory
    assert one_probe > 1.2 * per_token and per_step > 0
    assert probe_layer_memory(model, 16, "cpu")[1] == pytest.approx(0, abs=1024)  # fp32: no copies


def test_plan_picks_the_fewest_layers_that_fit(built):
    model, _ = built
    cfg = tiny_config("qwen3", lora_enabled=True, train_batch_size=64, max_seq_length=64, memory_budget_gb=1000.0)
    assert plan_checkpointing(cfg, model, "cpu").layers == 0
    free = plan_checkpointing(cfg, model, "cpu")
    base = free.estimate_gb - free.tokens_per_step * free.per_layer_bytes_per_token * free.total_layers / GB
    # A budget between "all layers kept" and "none kept" checkpoints some, and the estimate respects it.
    budget = base + 0.75 * (free.estimate_gb - base)
    plan = plan_checkpointing(dataclasses.replace(cfg, memory_budget_gb=budget), model, "cpu")
    assert 0 < plan.layers <= plan.total_layers and plan.estimate_gb <= budget
    with pytest.raises(MemoryBudgetError, match="cannot hold a step of 64 rows"):
        plan_checkpointing(dataclasses.replace(cfg, memory_budget_gb=0.01), model, "cpu")


def test_plan_under_the_guard_leaves_one_layers_growth_free(built):
    """With malloc_trim_over_budget the plan fits live memory under budget - guard_margin (the guard's line), and
    when that cannot be done the error names the room the guard keeps."""
    from l2e.train.memory import guard_margin

    model, _ = built
    cfg = tiny_config("qwen3", lora_enabled=True, train_batch_size=64, max_seq_length=64, memory_budget_gb=1000.0)
    free = plan_checkpointing(cfg, model, "cpu")
    margin = guard_margin(free.per_layer_bytes_per_token, free.tokens_per_step) / GB
    roomy = plan_checkpointing(dataclasses.replace(cfg, memory_budget_gb=free.estimate_gb + 1.01 * margin,
                                                   malloc_trim_over_budget=True), model, "cpu")
    assert roomy.layers == 0 and roomy.estimate_gb <= roomy.budget_gb - margin
    # Half the margin above "nothing checkpointed": enough without the guard, not with it (2 layers: the margin
    # is both layers' activations, so no checkpointing makes room).
    tight = dataclasses.replace(cfg, memory_budget_gb=free.estimate_gb + margin / 2)
    assert plan_checkpointing(tight, model, "cpu").layers == 0
    with pytest.raises(MemoryBudgetError, match="GB kept free by malloc_trim_over_budget"):
        plan_checkpointing(dataclasses.replace(tight, malloc_trim_over_budget=True), model, "cpu")


def test_apply_checkpointing_switches_the_first_layers():
    model, _ = build_model(tiny_config("qwen3", max_seq_length=64))
    apply_checkpointing(model.backbone, 1)
    assert [layer.gradient_checkpointing for layer in decoder_layers(model.backbone)] == [True, False]


def test_checkpointed_run_logs_the_same_losses(tmp_path, capsys):
    """Same losses at every step to 1e-4 (dropout off) with every layer checkpointed as without; a budget
    that holds the step checkpoints nothing and says so."""
    data = make_training_data(tmp_path / "d", rows=8, negatives=1)
    logs = []
    for name, fields in [("plain", {"memory_budget_gb": 1000.0}), ("all", {"gradient_checkpointing": True})]:
        cfg = write_config(tmp_path / name, "mrl_spread.lora.bi_mean", tiny_qwen3(), data, lora_dropout=0.0,
                           train_batch_size=train_rows(data), train_steps=10, checkpointing_steps=10,
                           validation_steps=10, log_interval=1, **fields)
        assert run.main(["--config", str(cfg)]) == 0
        logs.append(read_log(tmp_path / name / "out" / "tiny.mrl_spread.lora.bi_mean"))
    assert "memory: 0 of 2 layers checkpointed" in capsys.readouterr().out
    for a, b in zip(*logs):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4), a["step"]
    # every logged step says how much memory the process holds and the most it has held (when the peak happens)
    peaks = [r["peak_rss_gb"] for r in logs[0]]
    assert all(0 < r["rss_gb"] <= r["peak_rss_gb"] + 1e-3 for r in logs[0])
    assert peaks == sorted(peaks)


def heap_blocks(setup: str, report: str, *args: str) -> list:
    """In its own process (mallopt is process-wide, and what glibc keeps depends on the allocation history): run
    ``setup``, make glibc serve 4 MiB blocks from its heap, hold 100 of them (400 MiB, touched) each followed by a
    small live block that keeps the heap's top from shrinking past it, free them, run ``report`` (which prints)."""
    import subprocess
    import sys

    code = f"""
import sys, torch
from l2e.train.memory import current_rss_bytes, set_mmap_threshold, trim_heap
{setup}
warm = torch.ones(16 * 1024 * 1024 // 4); del warm  # glibc now raises its own threshold to 16 MiB
before = current_rss_bytes()
blocks, pins = [], []
for _ in range(100):
    blocks.append(torch.ones(1024, 1024))  # 4 MiB, touched
    pins.append(torch.ones(64))  # a small live block after each: the heap's top cannot shrink past it
during = current_rss_bytes()
del blocks
{report}
"""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return list(map(int, out.stdout.split()))


def test_mmap_threshold_returns_freed_activations_to_the_os():
    """malloc_mmap_threshold_mb: 400 MiB of freed 4 MiB blocks go back to the OS at once."""
    kept = {}
    for mode in ("0", "1"):
        during, after = heap_blocks('if sys.argv[1] == "1":\n    assert set_mmap_threshold(1)',
                                    "print((during - before) >> 20, (current_rss_bytes() - before) >> 20)", mode)
        assert during > 350
        kept[mode] = after
    # Without it glibc kept all 400 MiB in a plain interpreter here, but what it keeps depends on the process's
    # allocation history (16 MiB under pytest's environment): only the with-threshold side is asserted exactly.
    assert kept["1"] < 50 and kept["1"] <= kept["0"], kept


def test_trim_heap_returns_freed_heap_blocks_to_the_os():
    """trim_heap: the freed blocks pinned inside the heap leave resident memory; before it, glibc keeps them."""
    kept, trimmed = heap_blocks("", "kept = current_rss_bytes() - before\nassert trim_heap()\n"
                                    "print(kept >> 20, (current_rss_bytes() - before) >> 20)")
    assert trimmed < 50 and trimmed < kept, (kept, trimmed)


def test_trim_each_step_runs_once_per_optimizer_step_and_changes_no_result(tmp_path, monkeypatch):
    import l2e.train.trainer as trainer

    calls = []
    monkeypatch.setattr(trainer, "trim_heap", lambda: calls.append(1) or True)
    data = make_training_data(tmp_path / "d", rows=8, negatives=1)
    logs = []
    for name, trim in [("plain", False), ("trim", True)]:
        cfg = write_config(tmp_path / name, "mrl_spread.lora.bi_mean", tiny_qwen3(), data, lora_dropout=0.0,
                           train_batch_size=train_rows(data) // 2, train_steps=4, gradient_accumulation_steps=2,
                           checkpointing_steps=4, validation_steps=4, log_interval=1, malloc_trim_each_step=trim)
        assert run.main(["--config", str(cfg)]) == 0
        logs.append(read_log(tmp_path / name / "out" / "tiny.mrl_spread.lora.bi_mean"))
    assert len(calls) == 4  # optimizer steps, not micro-batches (accumulation 2)
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], abs=1e-6)


def test_resident_guard_trims_before_each_layer_and_its_backward_only_over_its_limit(monkeypatch):
    """Before every decoder layer's forward and before its backward; never while resident memory is under the
    limit. The backward check is what bounds a checkpointed layer's recomputation."""
    import l2e.train.memory as memory

    model, _ = build_model(tiny_config("qwen3", max_seq_length=64))
    model.train()  # checkpointing acts only in training
    apply_checkpointing(model.backbone, 1)  # one recomputed layer: its forward runs again inside the backward
    trims = []
    monkeypatch.setattr(memory, "trim_heap", lambda: trims.append(1) or True)
    guard = memory.ResidentGuard(limit_bytes=0)  # always over: every check trims
    guard.attach(model.backbone)
    ids = torch.randint(3, 100, (2, 8))
    model(ids, torch.ones_like(ids)).sum().backward()
    # 2 layers x (forward + backward); transformers recomputes a checkpointed layer's forward inside its backward,
    # outside module hooks, so the check before the backward is the one that precedes the recomputation
    assert guard.take_trims() == len(trims) == 4 and guard.take_trims() == 0
    guard.limit = 1 << 62  # far above anything resident
    model(ids, torch.ones_like(ids)).sum().backward()
    assert guard.take_trims() == 0 and len(trims) == 4


def test_malloc_thp_takes_effect_before_torchs_first_block_and_says_when_it_cannot():
    """torch reads THP_MEM_ALLOC_ENABLE once per process: set by enable_thp, a 2 MB block is page-aligned; a user's
    explicit 0 is left alone and reported as not in effect."""
    import os
    import subprocess
    import sys

    code = ("from l2e.train.memory import enable_thp; import torch; on = enable_thp(); "
            "print(on, torch.empty(3 << 20).data_ptr() % 4096 == 0)")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    for value, expect in [(None, "True True"), ("0", "False False")]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**env, **({"THP_MEM_ALLOC_ENABLE": value} if value else {})})
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-2:] == expect.split(), (value, out.stdout)


def test_malloc_trim_over_budget_needs_a_budget_and_the_plan(tmp_path, capsys):
    data = make_training_data(tmp_path / "d", rows=8, negatives=1)
    cfg = write_config(tmp_path / "c", "mrl_spread.lora.bi_mean", tiny_qwen3(), data, malloc_trim_over_budget=True)
    assert run.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "malloc_trim_over_budget=true needs memory_budget_gb > 0" in err and "e.g. memory_budget_gb=7" in err
    cfg = write_config(tmp_path / "c2", "mrl_spread.lora.bi_mean", tiny_qwen3(), data, malloc_trim_over_budget=True,
                       memory_budget_gb=7.0, gradient_checkpointing=True)
    assert run.main(["--config", str(cfg)]) == 2
    assert "set gradient_checkpointing=false and let memory_budget_gb choose the layers" in capsys.readouterr().err


def test_trim_over_budget_logs_its_trims_and_changes_no_result(tmp_path, monkeypatch, capsys):
    """A guard whose limit is always passed trims before every layer: every step logs its trims, and the losses
    are those of a run without the guard."""
    import l2e.train.memory as memory

    data = make_training_data(tmp_path / "d", rows=8, negatives=1)
    logs = []
    for name, guard in [("plain", False), ("guard", True)]:
        cfg = write_config(tmp_path / name, "mrl_spread.lora.bi_mean", tiny_qwen3(), data, lora_dropout=0.0,
                           train_batch_size=train_rows(data), train_steps=3, checkpointing_steps=3,
                           validation_steps=3, log_interval=1, memory_budget_gb=1000.0,
                           malloc_trim_over_budget=guard)
        if guard:  # the guard's line below zero (the plan itself is left as it is): every check trims
            monkeypatch.setattr(memory.CheckpointPlan, "guard_limit_bytes", lambda plan: -1.0)
        assert run.main(["--config", str(cfg)]) == 0
        logs.append(read_log(tmp_path / name / "out" / "tiny.mrl_spread.lora.bi_mean"))
    assert "memory: freed heap pages go back to the OS before any decoder layer that starts above" \
        in capsys.readouterr().out
    assert "trims" not in logs[0][0] and all(r["trims"] >= 4 for r in logs[1])  # 2 layers, forward + backward
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], abs=1e-6)
