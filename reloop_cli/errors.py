"""Errors a user can act on, each with the exit code the CLI returns for it.

Anything that is not a `ReloopError` is a bug: the CLI shows a traceback for it (with --debug)
and exits with `EXIT_INTERNAL`.
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
EXIT_GATE_REFUSED = 4
EXIT_INCONCLUSIVE = 5  # `reloop run`: too few holdout clicks to judge; live keeps serving


class ReloopError(Exception):
    """A problem with the user's input or workspace, reported as one line."""

    exit_code = EXIT_BAD_INPUT


class BadInput(ReloopError):
    """A file, row, field or option the user gave is not usable."""


class WorkspaceLocked(ReloopError):
    """Another reloop process holds the workspace lock."""

    exit_code = EXIT_LOCKED
