"""Checkpoints survive crashes: kill -9 mid-run then --resume, and a crash in the middle of a save."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers_models import tiny_qwen3
from helpers_train import ROOT, make_training_data, read_log, run_cli, write_config

STEPS = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("data"), rows=12, negatives=2)


def config(tmp_path, data, **kw):
    # LoRA dropout draws random numbers every step: resuming must restore the RNG for the losses to match.
    fields = dict(train_batch_size=4, train_steps=STEPS, checkpointing_steps=4, validation_steps=100, log_interval=1,
                  keep_last_n=2, warmup_steps=2, lora_dropout=0.1)
    return write_config(tmp_path, "mrl_spread.lora.bi_mean", tiny_qwen3(), data, **{**fields, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("plain")
    run_cli(["run.py", "--config", str(config(folder, data))])
    return read_log(folder / "out" / "tiny.mrl_spread.lora.bi_mean")


def assert_same_losses(log, reference):
    assert [r["step"] for r in log] == [r["step"] for r in reference]
    for a, b in zip(log, reference):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]


def test_kill_9_then_resume_reaches_same_losses(tmp_path, data, uninterrupted):
    cfg = config(tmp_path, data)
    run_dir = tmp_path / "out" / "tiny.mrl_spread.lora.bi_mean"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "run.py", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "step_8" / "trainer_state.json").exists():  # killed somewhere after the 2nd checkpoint
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_log(run_dir)[-1]["step"]
    assert killed_at < STEPS
    res = run_cli(["run.py", "--config", str(cfg), "--resume"])
    assert "resumed from" in res.stdout
    assert_same_losses(read_log(run_dir), uninterrupted)
    # keep_last_n=2: only the two newest checkpoints remain
    assert sorted(p.name for p in run_dir.glob("step_*")) == ["step_20", "step_24"]
    # Totals count every session of the run, not only the resumed part.
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["samples"] == STEPS * 4 and summary["steps"] == STEPS
    assert summary["steps_time_s"] + summary["validation_time_s"] + summary["checkpoint_time_s"] <= \
        summary["train_time_s"] + 1e-6
    # TensorBoard: the steps the killed run logged past its checkpoint are purged, so every step appears once
    # with the resumed run's value.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "tiny.mrl_spread.lora.bi_mean"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == list(range(1, STEPS + 1))
    for e, r in zip(scalars, read_log(run_dir)):
        assert e.value == pytest.approx(r["loss"], abs=1e-5)


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, data, uninterrupted):
    cfg = config(tmp_path, data)
    run_dir = tmp_path / "out" / "tiny.mrl_spread.lora.bi_mean"
    res = run_cli(["run.py", "--config", str(cfg)], env={"L2E_FAULT": "after_state:12"}, check=False)
    assert res.returncode == 137
    assert (run_dir / "step_12.l2e-tmp").is_dir() and not (run_dir / "step_12").exists()
    assert (run_dir / "step_8" / "trainer_state.json").exists()
    json.loads((run_dir / "step_8" / "trainer_state.json").read_text())
    res = run_cli(["run.py", "--config", str(cfg), "--resume"])
    assert f"step_8 at step 8" in res.stdout
    assert_same_losses(read_log(run_dir), uninterrupted)
    assert not (run_dir / "step_12.l2e-tmp").exists()


def test_resume_without_checkpoint_is_one_line_error(tmp_path, data):
    res = run_cli(["run.py", "--config", str(config(tmp_path, data)), "--resume"], check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: --resume latest: no complete checkpoint")


def test_planted_pickles_are_never_executed(tmp_path, data, capsys):
    """A checkpoint is data: a pickle planted where accelerate used to unpickle the scheduler, or where it reads
    the optimizer state, never runs; the damaged file is named in one line."""
    import pickle

    import run

    pwned = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    cfg = config(tmp_path, data, train_steps=4)
    assert run.main(["--config", str(cfg)]) == 0
    step = tmp_path / "out" / "tiny.mrl_spread.lora.bi_mean" / "step_4"
    (step / "state" / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Boom()))
    capsys.readouterr()
    assert run.main(["--config", str(cfg), "--resume"]) == 2 and not pwned.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: {step}: cannot load the training state")
    (step / "state" / "custom_checkpoint_0.pkl").unlink()
    # The same payload as the optimizer state, with the manifest updated to match its size.
    payload = pickle.dumps(Boom())
    (step / "state" / "optimizer.bin").write_bytes(payload)
    state = json.loads((step / "trainer_state.json").read_text())
    state["files"]["state/optimizer.bin"] = len(payload)
    (step / "trainer_state.json").write_text(json.dumps(state))
    assert run.main(["--config", str(cfg), "--resume"]) == 2 and not pwned.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: {step}: cannot load the training state")


def test_a_refused_pickle_in_the_newest_checkpoint_falls_back_to_the_one_before(tmp_path, data, capsys):
    """``--resume`` (latest) treats a checkpoint whose state is refused like a damaged one: a warning naming it,
    and the run continues from the complete checkpoint before it. The payload never runs."""
    import pickle

    import run

    pwned = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    cfg = config(tmp_path, data, train_steps=8, keep_last_n=0)
    assert run.main(["--config", str(cfg)]) == 0
    run_dir = tmp_path / "out" / "tiny.mrl_spread.lora.bi_mean"
    payload = pickle.dumps(Boom())
    (run_dir / "step_8" / "state" / "optimizer.bin").write_bytes(payload)
    state = json.loads((run_dir / "step_8" / "trainer_state.json").read_text())
    state["files"]["state/optimizer.bin"] = len(payload)  # same size in the manifest: not "damaged" by size
    (run_dir / "step_8" / "trainer_state.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert run.main(["--config", str(cfg), "--resume"]) == 0 and not pwned.exists()
    out = capsys.readouterr().out
    assert f"warning: {run_dir / 'step_8'}: cannot load the training state" in out and "resuming from step_4" in out
    assert "resumed from" in out and "step_4 at step 4" in out
    assert [r["step"] for r in read_log(run_dir)] == list(range(1, 9))
