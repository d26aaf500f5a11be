"""Run folders and checkpoints: complete or ignored, damage detected, fallback on resume, one run per folder."""
import json
import os
import pickle
import subprocess
import sys

import pytest

from l2e.train import checkpoint
from l2e.train.checkpoint import CheckpointError


def save(run_dir, step, payload="weights"):
    final = os.path.join(run_dir, f"step_{step}")
    tmp = checkpoint.begin(final)
    with open(os.path.join(tmp, "weights.bin"), "w") as f:
        f.write(f"{payload}{step}")
    checkpoint.commit(tmp, final, {"step": step})
    return final


def test_latest_ignores_incomplete_folders(tmp_path):
    run = str(tmp_path)
    save(run, 10)
    save(run, 20)
    checkpoint.begin(os.path.join(run, "step_30"))  # a crash mid-save leaves only step_30.l2e-tmp
    os.makedirs(os.path.join(run, "step_40"))  # no trainer_state.json: not a checkpoint
    assert checkpoint.latest_checkpoint(run) == os.path.join(run, "step_20")
    path, notes = checkpoint.resolve_resume(run, "latest")
    assert path == os.path.join(run, "step_20")
    assert notes == ["step_40 is damaged (no trainer_state.json (the save did not finish))"]


def test_state_file_lists_every_file_with_its_size(tmp_path):
    path = save(str(tmp_path), 3)
    state = json.loads(open(os.path.join(path, checkpoint.STATE_FILE)).read())
    assert state["files"] == {"weights.bin": len("weights3")} and checkpoint.damage(path) is None


@pytest.mark.parametrize("harm,why", [
    (lambda p: open(os.path.join(p, "weights.bin"), "w").write("w"), "weights.bin has 1 bytes, the checkpoint wrote 8"),
    (lambda p: os.remove(os.path.join(p, "weights.bin")), "weights.bin is missing"),
    (lambda p: open(os.path.join(p, "trainer_state.json"), "w").write('{"step": 2'), "not valid JSON (truncated?)"),
])
def test_damaged_newest_checkpoint_falls_back_and_says_why(tmp_path, harm, why):
    run = str(tmp_path)
    save(run, 1)
    harm(save(run, 2))
    path, notes = checkpoint.resolve_resume(run, "latest")
    assert path == os.path.join(run, "step_1") and why in notes[0] and notes[0].startswith("step_2 is damaged")
    with pytest.raises(CheckpointError, match=f"--resume {run}/step_2: not a usable checkpoint: "):
        checkpoint.resolve_resume(run, os.path.join(run, "step_2"))
    assert checkpoint.latest_checkpoint(run) == os.path.join(run, "step_1")


def test_rng_state_that_is_not_plain_data_is_damage(tmp_path):
    """A planted pickle in the RNG file is refused by weights_only loading: never executed, reported."""
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = save(str(tmp_path), 1)
    os.makedirs(os.path.join(path, "state"))
    with open(os.path.join(path, "state", "random_states_0.pkl"), "wb") as f:
        pickle.dump(Boom(), f)
    assert "state/random_states_0.pkl does not load as plain data" in checkpoint.damage(path)
    assert not (tmp_path / "pwned").exists()


def test_prune_keeps_newest(tmp_path):
    run = str(tmp_path)
    for s in (1, 2, 3, 10):
        save(run, s)
    checkpoint.prune(run, 2)
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(run)] == ["step_3", "step_10"]


def test_saving_same_step_twice_replaces(tmp_path):
    run = str(tmp_path)
    save(run, 5, payload="first")
    path = save(run, 5, payload="second")
    assert open(os.path.join(path, "weights.bin")).read() == "second5"
    assert not os.path.exists(path + ".l2e-old") and not os.path.exists(path + ".l2e-tmp")


def test_resume_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        checkpoint.resolve_resume(str(tmp_path), "latest")
    os.makedirs(tmp_path / "step_3")
    with pytest.raises(CheckpointError, match="not a usable checkpoint: no trainer_state.json"):
        checkpoint.resolve_resume(str(tmp_path), str(tmp_path / "step_3"))
    with pytest.raises(CheckpointError, match="not a folder"):
        checkpoint.resolve_resume(str(tmp_path), str(tmp_path / "nope"))


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    lock = checkpoint.RunLock(str(tmp_path))
    code = ("import sys; from l2e.train.checkpoint import RunLock, CheckpointError\n"
            f"try:\n    RunLock({str(tmp_path)!r})\nexcept CheckpointError as e:\n    print(e); sys.exit(3)\n")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode == 3 and f"is in use by another run (pid {os.getpid()})" in other.stdout
    lock.release()
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_fresh_run_refuses_an_existing_run_unless_overwrite(tmp_path):
    run = str(tmp_path / "run")
    checkpoint.check_fresh_run(run, overwrite=False)  # nothing there yet
    save(run, 4)
    open(os.path.join(run, "config.json"), "w").write("{}")
    with pytest.raises(CheckpointError, match=r"already holds a run \(step_4, config.json\); continue it with "
                                              r"--resume, choose another experiment_id, or pass --overwrite"):
        checkpoint.check_fresh_run(run, overwrite=False)
    checkpoint.check_fresh_run(run, overwrite=True)
    assert os.listdir(run) == []
