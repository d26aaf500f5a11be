"""Run folders and checkpoints: one run per folder at a time, checkpoints that are complete or ignored.

- A checkpoint is written into ``step_N.tmp`` and swapped in with :func:`l2e.core.atomic.replace_dir` only after
  every file is on disk; ``trainer_state.json`` is written last and lists every file with its size (the
  manifest). A crash (or ``kill -9``) mid-save leaves the previous checkpoints untouched.
- :func:`damage` re-checks a checkpoint against its manifest (missing or truncated files, a state file
  that does not parse, RNG states that do not load as plain data); ``--resume`` falls back from a damaged
  newest checkpoint to the newest complete one and says so, *before* anything in the run folder is
  rewritten.
- Nothing in a checkpoint is unpickled as code: weights are safetensors, the optimizer and RNG states are
  read with ``torch.load(weights_only=True)`` (accelerate's default), and the LR schedule's state lives in
  ``trainer_state.json`` (accelerate would unpickle a registered scheduler with ``weights_only=False``).
- :class:`RunLock` keeps a second run out of a folder in use; :func:`check_fresh_run` refuses to start a new
  run over an existing one without ``--resume`` or ``--overwrite``.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from typing import Dict, List, Optional, Tuple

from l2e.core.atomic import replace_dir, write_json
from l2e.core.errors import L2EError
from l2e.core.run_layout import STEP_PATTERN, RunLayout

STATE_FILE = "trainer_state.json"
LOCK_FILE = ".lock"


class CheckpointError(L2EError):
    """A run folder or checkpoint that cannot be used as asked (in use, damaged, not a checkpoint)."""


# --- writing ----------------------------------------------------------------------------------------------


def manifest(folder: str) -> Dict[str, int]:
    """``{relative path: size in bytes}`` of every file under ``folder``."""
    from l2e.core.atomic import MARKER

    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name == MARKER and root == folder:  # the staging marker is removed when the folder is swapped in
                continue
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = os.path.getsize(path)
    return dict(sorted(out.items()))


def begin(final_path: str) -> str:
    """Fresh temporary folder for a checkpoint that will become ``final_path``."""
    from l2e.core.atomic import begin_dir

    return begin_dir(final_path)


def commit(tmp: str, final_path: str, state: dict) -> None:
    """Write the state file (with the manifest) last, then swap the folder into place."""
    state = {**state, "files": manifest(tmp)}
    write_json(os.path.join(tmp, STATE_FILE), state, newline=False, indent=2)
    replace_dir(tmp, final_path)


def prune(run_dir: str, keep_last_n: int) -> None:
    """Delete all but the newest ``keep_last_n`` complete checkpoints (0 keeps all)."""
    if keep_last_n <= 0:
        return
    complete = [p for p in list_checkpoints(run_dir) if damage(p) is None]
    for path in complete[:-keep_last_n]:
        shutil.rmtree(path)


# --- reading ----------------------------------------------------------------------------------------------


_WRITE_FAILURES = ("no space left", "write failed", "storagefull", "os error 28", "disk quota", "read-only file")


def is_write_failure(e: BaseException) -> bool:
    """A full, read-only or over-quota disk, however the writer reports it: an ``OSError`` with its errno, or
    torch.save's ``RuntimeError`` ("file write failed") and safetensors' ``IoError`` (``StorageFull``) that
    carry no errno."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return True
    return any(m in str(e).lower() for m in _WRITE_FAILURES)


def write_failure_text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:200]


def step_of(path: str) -> int:
    """``.../step_12`` -> 12 (-1 for any other name)."""
    m = STEP_PATTERN.match(os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else -1


def list_checkpoints(run_dir: str) -> List[str]:
    """Every ``step_*`` folder of a run (complete or not), oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = [(int(m.group(1)), os.path.join(run_dir, name)) for name in os.listdir(run_dir)
             if (m := STEP_PATTERN.match(name)) and os.path.isdir(os.path.join(run_dir, name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """The newest complete checkpoint, or None."""
    for path in reversed(list_checkpoints(run_dir)):
        if damage(path) is None:
            return path
    return None


def read_state(path: str) -> dict:
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


def damage(path: str) -> Optional[str]:
    """Why ``path`` is not a usable checkpoint, or None when it is complete."""
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        return f"no {STATE_FILE} (the save did not finish)"
    try:
        state = read_state(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{STATE_FILE} is not valid JSON (truncated?)"
    if not isinstance(state, dict) or "step" not in state:
        return f"{STATE_FILE} has no step"
    for rel, size in state.get("files", {}).items():
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            return f"{rel} is missing"
        if os.path.getsize(full) != size:
            return f"{rel} has {os.path.getsize(full)} bytes, the checkpoint wrote {size}"
    return _rng_damage(path)


def _rng_damage(path: str) -> Optional[str]:
    """accelerate swallows an RNG state that fails to load (and resumes with other dropout masks): check
    first, loading as plain data only."""
    from accelerate.utils import load

    state_dir = os.path.join(path, "state")
    if not os.path.isdir(state_dir):
        return None
    for name in sorted(os.listdir(state_dir)):
        if name.startswith("random_states_") and name.endswith(".pkl"):
            try:
                load(os.path.join(state_dir, name), weights_only=True)
            except Exception as e:  # noqa: BLE001 -- any failure means the file is not what we wrote
                return f"state/{name} does not load as plain data ({type(e).__name__})"
    return None


def resolve_resume(run_dir: str, resume: str) -> Tuple[str, List[str]]:
    """``--resume`` value → (checkpoint folder, notes on damaged newer checkpoints that were skipped)."""
    if resume != "latest":
        why = damage(resume) if os.path.isdir(resume) else "not a folder"
        if why:
            raise CheckpointError(f"--resume {resume}: not a usable checkpoint: {why}")
        return resume, []
    skipped = []
    for path in reversed(list_checkpoints(run_dir)):
        why = damage(path)
        if why is None:
            return path, skipped
        skipped.append(f"{os.path.basename(path)} is damaged ({why})")
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise CheckpointError(f"--resume latest: no complete checkpoint (step_*/{STATE_FILE}) in {run_dir}{detail}")


# --- the run folder ---------------------------------------------------------------------------------------


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock`` for the life of the process (released by the kernel when
    the process ends, however it ends), so two runs never write one folder."""

    def __init__(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, LOCK_FILE)
        while True:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(self._fd)
                raise CheckpointError(f"{run_dir} is in use by another run (pid {holder}); wait for it to finish, "
                                      "or choose another experiment_id") from None
            # The holder removes the file before unlocking: a lock taken on a removed file is no lock.
            try:
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(self._fd)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Unlock and remove ``.lock`` (no stale pid is left behind, also when the run was refused). The file is
        removed while still locked, so no other process can lock it in between."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(OSError):  # a run folder that only the refused run's lock had created
                os.rmdir(os.path.dirname(self.path))


def existing_run(run_dir: str) -> List[str]:
    """What of an earlier run ``run_dir`` holds (empty list: nothing)."""
    if not os.path.isdir(run_dir):
        return []
    names = [os.path.basename(p) for p in list_checkpoints(run_dir)]
    return names + [n for n in RunLayout.RUN_FILES if os.path.exists(os.path.join(run_dir, n))]


def check_fresh_run(run_dir: str, overwrite: bool) -> None:
    """A new run (no ``--resume``) must not mix with an earlier one in the same folder."""
    found = existing_run(run_dir)
    if not found:
        return
    if not overwrite:
        raise CheckpointError(
            f"{run_dir} already holds a run ({', '.join(found[:6])}); continue it with --resume, choose another "
            "experiment_id, or pass --overwrite to replace it")
    for name in os.listdir(run_dir):
        if name == LOCK_FILE:
            continue
        path = os.path.join(run_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
