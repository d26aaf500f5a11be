"""Checkpoint folders that are either complete or absent.

A checkpoint is written into ``step_N.tmp`` and renamed to ``step_N`` only after every file is on disk, so
a crash (or ``kill -9``) mid-save leaves the previous checkpoints untouched and at worst a ``.tmp`` folder
that ``latest_checkpoint`` ignores and the next save replaces. ``trainer_state.json`` is the last file
written; a folder without it is not a checkpoint.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import List, Optional

STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"^step_(\d+)$")


def list_checkpoints(run_dir: str) -> List[str]:
    """Complete ``step_*`` checkpoints of a run, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = []
    for name in os.listdir(run_dir):
        m = _STEP.match(name)
        if m and os.path.isfile(os.path.join(run_dir, name, STATE_FILE)):
            found.append((int(m.group(1)), os.path.join(run_dir, name)))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str) -> Optional[str]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(run_dir: str, resume: str) -> str:
    """``--resume`` value → checkpoint folder (``latest`` or a path), with a one-line error otherwise."""
    path = latest_checkpoint(run_dir) if resume == "latest" else resume
    if path is None:
        raise FileNotFoundError(f"--resume latest: no complete checkpoint (step_*/{STATE_FILE}) in {run_dir}")
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        raise FileNotFoundError(f"--resume {path}: not a complete checkpoint (no {STATE_FILE})")
    return path


def begin(final_path: str) -> str:
    """Fresh temporary folder for a checkpoint that will become ``final_path``."""
    tmp = final_path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def commit(tmp: str, final_path: str, state: dict) -> None:
    """Write the state file last, then move the folder into place (rename is atomic on one filesystem)."""
    with open(os.path.join(tmp, STATE_FILE), "w") as f:
        json.dump(state, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(final_path):
        # Same step saved twice (e.g. the final step is also a checkpointing step): replace it.
        old = final_path + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final_path, old)
        os.rename(tmp, final_path)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final_path)


def prune(run_dir: str, keep_last_n: int) -> None:
    """Delete all but the newest ``keep_last_n`` checkpoints (0 keeps all)."""
    if keep_last_n <= 0:
        return
    for path in list_checkpoints(run_dir)[:-keep_last_n]:
        shutil.rmtree(path)
