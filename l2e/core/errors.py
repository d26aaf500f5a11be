"""One base class for every problem a user can fix, and the one way entry points report it.

Every l2e error (``ConfigError``, ``DataError``, ``TrainingError``, ``EvalError``, ``MineError``,
``ModelNotAvailableError``, ...) derives from ``L2EError``. Entry scripts wrap ``main`` in :func:`run_main`:
an ``L2EError`` becomes one line ``error: <message>`` on stderr and exit status 2; an interrupted run
(Ctrl-C) exits 130 after the code below it has left the newest complete checkpoint as it was; a write
that the operating system refuses (full disk, read-only folder, no permission) becomes one line naming
the file. Anything else is a bug in l2e and keeps its traceback.
"""
from __future__ import annotations

import errno
import sys
from typing import Callable, Iterable, Optional

# Writes the operating system refuses for reasons the user can fix (full disk, read-only mount, ...).
_USER_OS_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


class L2EError(Exception):
    """A problem in the user's input or environment, reported as one line."""


class ModelError(L2EError):
    """A model, tokenizer or adapter that cannot be loaded or adapted as the config asks."""


def one_line(text: str) -> str:
    """A message on one line: line breaks become ``; `` (multi-problem messages stay readable)."""
    parts = [p.strip() for p in str(text).replace("\r", "\n").split("\n")]
    return "; ".join(p[2:] if p.startswith("- ") else p for p in parts if p)


def collect(problems: Iterable[str], error: Callable[[str], L2EError]) -> None:
    """Raise ``error("; ".join(problems))`` when there is any problem: every CLI reports all at once."""
    problems = [p for p in problems if p]
    if problems:
        raise error("; ".join(problems))


def report(message: str) -> None:
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def run_main(main: Callable[[], Optional[int]]) -> int:
    """Call ``main()`` and turn user-facing failures into one ``error:`` line and an exit status."""
    try:
        return main() or 0
    except L2EError as e:
        report(str(e))
        return 2
    except KeyboardInterrupt:
        report("interrupted (Ctrl-C); complete checkpoints and outputs were left as they were")
        return 130
    except OSError as e:
        if e.errno not in _USER_OS_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        report(f"{where}{e.strerror or e} (free space, or choose a writable folder)")
        return 2
