"""Errors a user can act on, each with the exit code the CLI returns for it.

Anything that is not a `ReloopError` is a bug: the CLI shows a traceback for it (with --debug)
and exits with `EXIT_INTERNAL`. The machine refusing a write (a full disk, no permission, a
read-only file system) is not a bug either: `storage_problem` recognises it, from whichever
library raised it, so the CLI can say so in one line.
"""

from __future__ import annotations

import errno
import sqlite3

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
EXIT_GATE_REFUSED = 4
EXIT_INCONCLUSIVE = 5  # `reloop run`: too few holdout clicks to judge; live keeps serving
EXIT_TRAINING_FAILED = 6  # training met a non-finite loss or weight; nothing was published

# errno values that mean "the machine would not store this", not "reloop has a bug".
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file grew past the size this process may write",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
# The same conditions as other libraries word them (Polars/Rust, SQLite, torch's writer).
STORAGE_MESSAGES = {
    "no space left on device": "no space left on the device",
    "database or disk is full": "no space left on the device",
    "file too large": "the file grew past the size this process may write",
    "read-only file system": "the file system is read-only",
    "permission denied": "permission denied",
    "file write failed": "a write to disk failed (is the disk full?)",
}


class ReloopError(Exception):
    """A problem with the user's input or workspace, reported as one line."""

    exit_code = EXIT_BAD_INPUT


class BadInput(ReloopError):
    """A file, row, field or option the user gave is not usable."""


class WorkspaceLocked(ReloopError):
    """Another reloop process holds the workspace lock."""

    exit_code = EXIT_LOCKED


class TrainingFailed(ReloopError):
    """Training met a non-finite loss, gradient or weight; nothing was published."""

    exit_code = EXIT_TRAINING_FAILED


def storage_problem(error: BaseException) -> str | None:
    """What the machine refused ("no space left on the device: /ws/logs/x"), or None when
    `error` is something else."""
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        return f"{STORAGE_ERRNOS[error.errno]}{where}"
    if isinstance(error, OSError | RuntimeError | sqlite3.Error) or type(
        error
    ).__module__.startswith(("polars", "pyarrow")):
        text = str(error).lower()
        for fragment, meaning in STORAGE_MESSAGES.items():
            if fragment in text:
                return meaning
    return None
