"""Two CPU processes (accelerate launch, gloo): same losses as one process on the same global batch.

Two datasets, one with teacher scores and kd on: whether a step has a kd term is decided by its dataset, the
same on both ranks, so the ranks reduce the same terms (a per-rank decision used to hang here)."""
import json

import pytest

from helpers_models import tiny_qwen3
from helpers_train import make_training_data, read_log, run_cli, write_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("data"), rows=16, negatives=2, scored=True)


def test_two_processes_match_one(tmp_path, data):
    common = dict(train_steps=6, checkpointing_steps=3, validation_steps=100, log_interval=1, warmup_steps=1,
                  learning_rate=1e-3, kd_enabled=True, kd_weight=0.5)
    one = write_config(tmp_path / "one", "mrl_spread.bi_mean", tiny_qwen3(), data, train_batch_size=8, **common)
    two = write_config(tmp_path / "two", "mrl_spread.bi_mean", tiny_qwen3(), data, train_batch_size=4, **common)
    run_cli(["run.py", "--config", str(one)])
    run_cli(["-m", "accelerate.commands.launch", "--config_file", "configs/accelerate_cpu.yaml", "run.py",
             "--config", str(two)])
    log1 = read_log(tmp_path / "one" / "out" / "tiny.mrl_spread.bi_mean")
    log2 = read_log(tmp_path / "two" / "out" / "tiny.mrl_spread.bi_mean")
    # Cross-device negatives + DDP gradient averaging: 2 x 4 rows is the same step as 1 x 8 rows.
    assert log2[0]["loss"] == pytest.approx(log1[0]["loss"], abs=1e-5)
    for a, b in zip(log1, log2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3), a["step"]
    assert {r["dataset"] for r in log2} == {"debian", "scored"}
    assert all(("kd" in r) == (r["dataset"] == "scored") for r in log1 + log2)
    summary = json.loads((tmp_path / "two" / "out" / "tiny.mrl_spread.bi_mean" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 6
    state = json.loads((tmp_path / "two" / "out" / "tiny.mrl_spread.bi_mean" / "step_6" / "trainer_state.json")
                       .read_text())
    assert state["num_processes"] == 2
    assert (tmp_path / "two" / "out" / "tiny.mrl_spread.bi_mean" / "step_6" / "state").is_dir()
