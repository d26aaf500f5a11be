"""Write a folder or a file so that its reader always finds the complete old one or the complete new one.

Every output l2e replaces (checkpoints, ``final/``, tokenized data, mined negatives) is written to a staging
path beside it and swapped in at the end with :func:`replace_dir` / :func:`atomic_file`:

- a new folder is built in ``<dest>.l2e-tmp``, marked with a ``.l2e_staging`` file (same filesystem, so renames
  are atomic); only marked folders are ever deleted, so a user's ``<dest>.tmp`` or ``<dest>.old`` is safe;
- an existing ``dest`` is *exchanged* with it in one ``renameat2(RENAME_EXCHANGE)`` call (Linux >= 3.15),
  so there is no instant without a ``dest``; the old content, now at the staging path, is deleted after;
- where the kernel or filesystem cannot exchange, the old folder is renamed to ``<dest>.l2e-old`` first and
  :func:`recover` (called before every read or write of ``dest``) renames it back if a crash hit between
  the two renames (``<dest>.l2e-old`` carries the marker too).

A crash at any point leaves ``dest`` complete (old or new) plus, at worst, a staging folder that the next
write removes. Written by hand: neither the standard library nor a maintained package exposes an atomic
directory swap.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
from typing import Iterator

from l2e.core.errors import L2EError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


# Staging names no user picks, and a marker inside: a folder is deleted only when l2e made it. A user's own
# ``X.tmp`` or ``X.old`` beside an output is never touched.
STAGING_SUFFIX, OLD_SUFFIX = ".l2e-tmp", ".l2e-old"
MARKER = ".l2e_staging"


class StagingError(L2EError):
    """A path l2e needs for staging holds something l2e did not make."""


def staging_path(dest: str) -> str:
    return dest.rstrip(os.sep) + STAGING_SUFFIX


def _old_path(dest: str) -> str:
    return dest.rstrip(os.sep) + OLD_SUFFIX


def is_ours(folder: str) -> bool:
    """A staging or old folder l2e made (it holds the marker file)."""
    return os.path.isfile(os.path.join(folder, MARKER))


def _mark(folder: str) -> None:
    with open(os.path.join(folder, MARKER), "w") as f:
        f.write("made by l2e while replacing a folder; safe to delete\n")


def _unmark(folder: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(folder, MARKER))


def _refuse(path: str) -> None:
    raise StagingError(f"{path} exists and was not made by l2e (no {MARKER} inside); l2e stages its writes there "
                       "-- move it away (nothing was changed)")


def recover(dest: str) -> None:
    """Undo a crash of the two-rename fallback: ``dest`` missing but l2e's ``dest.l2e-old`` complete -> put it
    back; with ``dest`` present, the leftover old copy is deleted. Anything without the marker is left alone."""
    old = _old_path(dest)
    if os.path.isdir(old) and is_ours(old):
        if os.path.exists(dest):
            shutil.rmtree(old)
        else:
            os.rename(old, dest)
            _unmark(dest)


def begin_dir(dest: str) -> str:
    """A fresh, empty, marked staging folder for ``dest`` (l2e's own leftover from a crashed write is removed
    first; anything else at the staging path is refused)."""
    recover(dest)
    tmp = staging_path(dest)
    if os.path.isdir(tmp) and is_ours(tmp):
        shutil.rmtree(tmp)
    elif os.path.lexists(tmp):
        _refuse(tmp)
    os.makedirs(tmp)
    _mark(tmp)
    return tmp


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths; False where the platform or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def replace_dir(tmp: str, dest: str) -> None:
    """Put the complete folder ``tmp`` at ``dest``; the old ``dest`` (if any) is deleted afterwards."""
    recover(dest)
    # tmp keeps its marker until it is at dest (a crash before leaves it deletable); dest then loses the marker.
    if not os.path.exists(dest):
        os.rename(tmp, dest)
        _unmark(dest)
        return
    old = _old_path(dest)
    if os.path.lexists(old):
        _refuse(old)
    # The old content is marked before it moves: at the staging path (exchange) or at dest.l2e-old (two
    # renames), a crash leaves it as l2e's own leftover, which the next write may delete or recover() restore.
    _mark(dest)
    try:
        exchanged = _exchange(tmp, dest)
    except BaseException:
        _unmark(dest)
        raise
    if exchanged:
        _unmark(dest)
        _fault_point("after_exchange")
        shutil.rmtree(tmp)  # now holds the old content, which l2e is replacing
        return
    os.rename(dest, old)
    _fault_point("between_renames")
    os.rename(tmp, dest)
    _unmark(dest)
    shutil.rmtree(old)


@contextlib.contextmanager
def atomic_dir(dest: str) -> Iterator[str]:
    """``with atomic_dir(dest) as tmp:`` write into ``tmp``; on success it becomes ``dest``, on error it is removed."""
    tmp = begin_dir(dest)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """``with atomic_file(path) as tmp:`` write the file ``tmp``; ``os.replace`` then puts it at ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Not "X.tmp" (a user's file of that name is never overwritten), and one per process: several ranks may
    # build the same cache file at once; each writes its own copy and os.replace puts a complete one in place.
    tmp = f"{path}.{os.getpid()}{STAGING_SUFFIX}"
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_json(path: str, obj, *, newline: bool = True, **json_kwargs) -> None:
    """``json.dumps(obj, **json_kwargs)`` into ``path`` atomically: a reader, or a crash, sees the old file or the
    new one, never a half-written one. ``newline``: end the file with a newline (the files people open do).

    Serialised before the disk is touched, so an object json cannot encode leaves the old file as it was; fsynced
    before the rename, so the new name never points at data still in the page cache after a power cut."""
    text = json.dumps(obj, **json_kwargs) + ("\n" if newline else "")
    with atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def _fault_point(name: str) -> None:
    """Crash on purpose where ``L2E_FAULT=atomic:<name>`` says (the crash tests use it; no-op otherwise)."""
    if os.environ.get("L2E_FAULT") == f"atomic:{name}":
        os._exit(137)
