"""Crash points for the kill tests: with RELOOP_CRASH_AT=<name> set, the process SIGKILLs itself
at that point, exactly as if the machine had killed it there. Unset (always, outside tests), a
crash point does nothing."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("RELOOP_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
