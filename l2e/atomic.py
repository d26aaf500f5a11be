"""Write a folder or a file so that its reader always finds the complete old one or the complete new one.

Every output l2e replaces (checkpoints, ``final/``, tokenized data, mined negatives) is written to a staging
path beside it and swapped in at the end with :func:`replace_dir` / :func:`atomic_file`:

- a new folder is built in ``<dest>.tmp`` (same filesystem, so renames are atomic);
- an existing ``dest`` is *exchanged* with it in one ``renameat2(RENAME_EXCHANGE)`` call (Linux >= 3.15),
  so there is no instant without a ``dest``; the old content, now at the staging path, is deleted after;
- where the kernel or filesystem cannot exchange, the old folder is renamed to ``<dest>.old`` first and
  :func:`recover` (called before every read or write of ``dest``) renames it back if a crash hit between
  the two renames.

A crash at any point leaves ``dest`` complete (old or new) plus, at worst, a staging folder that the next
write removes. Written by hand: neither the standard library nor a maintained package exposes an atomic
directory swap.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from typing import Iterator

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_path(dest: str) -> str:
    return dest.rstrip(os.sep) + ".tmp"


def _old_path(dest: str) -> str:
    return dest.rstrip(os.sep) + ".old"


def recover(dest: str) -> None:
    """Undo a crash of the two-rename fallback: ``dest`` missing but ``dest.old`` complete -> put it back."""
    old = _old_path(dest)
    if os.path.isdir(old):
        if os.path.exists(dest):
            shutil.rmtree(old)
        else:
            os.rename(old, dest)


def begin_dir(dest: str) -> str:
    """A fresh, empty staging folder for ``dest`` (a leftover from a crashed write is removed first)."""
    recover(dest)
    tmp = staging_path(dest)
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    elif os.path.exists(tmp):
        os.remove(tmp)
    os.makedirs(tmp)
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
    if not os.path.exists(dest):
        os.rename(tmp, dest)
        return
    if _exchange(tmp, dest):
        _fault_point("after_exchange")
        shutil.rmtree(tmp)  # now holds the old content
        return
    old = _old_path(dest)
    os.rename(dest, old)
    _fault_point("between_renames")
    os.rename(tmp, dest)
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
    tmp = path + ".tmp"
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def _fault_point(name: str) -> None:
    """Crash on purpose where ``L2E_FAULT=atomic:<name>`` says (the crash tests use it; no-op otherwise)."""
    if os.environ.get("L2E_FAULT") == f"atomic:{name}":
        os._exit(137)
