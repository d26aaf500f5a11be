"""Checkpoint folders are complete or absent; latest/prune/resume resolution."""
import os

import pytest

from l2e import checkpoint


def save(run_dir, step):
    final = os.path.join(run_dir, f"step_{step}")
    tmp = checkpoint.begin(final)
    open(os.path.join(tmp, "weights.bin"), "w").write(str(step))
    checkpoint.commit(tmp, final, {"step": step})
    return final


def test_latest_ignores_incomplete_folders(tmp_path):
    run = str(tmp_path)
    save(run, 10)
    save(run, 20)
    checkpoint.begin(os.path.join(run, "step_30"))  # a crash mid-save leaves only step_30.tmp
    os.makedirs(os.path.join(run, "step_40"))  # no trainer_state.json: not a checkpoint
    assert checkpoint.latest_checkpoint(run) == os.path.join(run, "step_20")
    assert checkpoint.resolve_resume(run, "latest") == os.path.join(run, "step_20")


def test_prune_keeps_newest(tmp_path):
    run = str(tmp_path)
    for s in (1, 2, 3, 10):
        save(run, s)
    checkpoint.prune(run, 2)
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(run)] == ["step_3", "step_10"]


def test_saving_same_step_twice_replaces(tmp_path):
    run = str(tmp_path)
    save(run, 5)
    path = save(run, 5)
    assert open(os.path.join(path, "weights.bin")).read() == "5"
    assert not os.path.exists(path + ".old") and not os.path.exists(path + ".tmp")


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        checkpoint.resolve_resume(str(tmp_path), "latest")
    os.makedirs(tmp_path / "step_3")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        checkpoint.resolve_resume(str(tmp_path), str(tmp_path / "step_3"))
