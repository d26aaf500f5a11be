"""precision: what "auto" picks and why, and a bf16 autocast training step that stays close to fp32."""
import json

import pytest
import torch

import run
from helpers_models import tiny_qwen3
from helpers_train import make_training_data, read_log, write_config
from l2e.model.precision import Precision, cpu_bf16_flags, resolve_precision

CPU = torch.device("cpu")


def test_forced_choices_are_taken_as_given():
    assert resolve_precision("fp32", CPU) == Precision("fp32", "precision=fp32 asked for")
    assert resolve_precision("bf16", CPU, flags=()).bf16  # forced: even where it would be emulated


def test_auto_without_native_bf16_is_fp32_and_says_why():
    chosen = resolve_precision("auto", CPU, flags=(), speedup=5.0)  # no flag: the probe is not even trusted
    assert chosen.name == "fp32" and "reports no native bf16" in chosen.reason


def test_auto_needs_the_flag_and_a_measured_gain():
    slow = resolve_precision("auto", CPU, flags=("avx512_bf16",), speedup=1.05)
    assert slow.name == "fp32" and "only 1.05x as fast" in slow.reason
    fast = resolve_precision("auto", CPU, flags=("amx_bf16",), speedup=2.4)
    assert fast.name == "bf16" and "amx_bf16" in fast.reason and "2.40x faster" in fast.reason


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='fp16': use one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(str(info)) == ("amx_bf16", "avx512_bf16")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_bf16_flags(str(info)) == ()
    assert cpu_bf16_flags(str(tmp_path / "missing")) == ()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("data"), rows=8, negatives=1)


def test_bf16_training_steps_stay_close_to_fp32(tmp_path, data):
    """bf16 autocast with fp32 master weights (LoRA, MRL, the compact LoRA dropout): the same four steps give
    losses within bf16's rounding of fp32's, and the run records what it chose."""
    logs = {}
    for precision in ("fp32", "bf16"):
        cfg = write_config(tmp_path / precision, "mrl_spread.lora.bi_mean", tiny_qwen3(), data, train_batch_size=4,
                           train_steps=4, checkpointing_steps=100, validation_steps=100, log_interval=1,
                           lora_dropout=0.1, precision=precision)
        assert run.main(["--config", str(cfg)]) == 0
        run_dir = tmp_path / precision / "out" / "tiny.mrl_spread.lora.bi_mean"
        logs[precision] = [r["loss"] for r in read_log(run_dir)]
        summary = json.loads((run_dir / "training_summary.json").read_text())
        assert summary["precision"] == precision and summary["precision_reason"]
        weights = [p for n, p in __import__("safetensors.torch", fromlist=["load_file"]).load_file(
            str(run_dir / "final_adapter" / "adapter_model.safetensors")).items()]
        assert all(w.dtype == torch.float32 for w in weights)  # master weights stay fp32
    assert logs["fp32"] != logs["bf16"]  # bf16 really ran
    for a, b in zip(logs["fp32"], logs["bf16"]):
        assert abs(a - b) <= 0.03 * abs(a) + 0.02, (logs["fp32"], logs["bf16"])
