"""Progress for long steps: bars where a person is watching, a line now and then where not.

Stage functions report through `task(...)` and `note(...)`; the CLI decides what is shown
(`show_progress`): a Rich bar on stderr when stderr is a terminal, and otherwise (cron, a pipe,
a CI log) one plain line every `RELOOP_PROGRESS_SECONDS` (30) seconds with the elapsed time, the
step the command is on and how far its bars are, so a run of 25 minutes is not 25 minutes of
silence. A command done sooner prints none; --quiet turns both off. Stage code never needs to
know which.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

PROGRESS_SECONDS = "RELOOP_PROGRESS_SECONDS"

_current: contextvars.ContextVar[Progress | Heartbeat | None] = contextvars.ContextVar(
    "reloop_progress", default=None
)


class Task:
    """One bar; `advance` is a no-op when no bar is shown."""

    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None and self._id is not None:
            self._progress.advance(self._id, steps)


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Task]:
    progress = _current.get()
    if progress is None:
        yield Task(None, None)
        return
    task_id = progress.add_task(description, total=total)
    try:
        yield Task(progress, task_id)
    finally:
        progress.remove_task(task_id)


class Heartbeat:
    """Progress where nobody watches a bar: every `every` seconds one line on `stream`, from a
    thread of its own. It takes the calls a Rich `Progress` takes, so stages need not know."""

    def __init__(self, every: float, stream: TextIO) -> None:
        self.every, self.stream = every, stream
        self.console = self  # `note` prints through `progress.console`
        self.tasks: dict[int, list] = {}  # id -> [description, total, done]
        self.step = ""
        self.started = time.monotonic()
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="reloop-progress", daemon=True)

    def add_task(self, description: str, total: int | None = None) -> int:
        task_id = next(self._ids)
        self.tasks[task_id] = [description, total, 0]
        return task_id

    def advance(self, task_id: int, steps: int = 1) -> None:
        if task_id in self.tasks:
            self.tasks[task_id][2] += steps

    def remove_task(self, task_id: int) -> None:
        self.tasks.pop(task_id, None)

    def print(self, text: str) -> None:
        self.step = Text.from_markup(text).plain

    def line(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        parts = [self.step] if self.step else []
        for description, total, done in list(self.tasks.values()):
            parts.append(f"{description} {done}/{total}" if total else description)
        doing = "; ".join(parts) or "working"
        return f"reloop: {elapsed // 60}m{elapsed % 60:02d}s, {doing}"

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _heartbeat_seconds() -> float:
    try:
        return max(float(os.environ.get(PROGRESS_SECONDS, "30")), 0.05)
    except ValueError:
        return 30.0


@contextlib.contextmanager
def show_progress(enabled: bool) -> Iterator[None]:
    """Progress on stderr for the duration, if `enabled`: bars on a terminal, else a line
    every RELOOP_PROGRESS_SECONDS."""
    console = Console(stderr=True)
    if not enabled:
        yield
        return
    if not console.is_terminal:
        heartbeat = Heartbeat(_heartbeat_seconds(), sys.stderr)
        token = _current.set(heartbeat)
        try:
            with heartbeat:
                yield
        finally:
            _current.reset(token)
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    token = _current.set(bars)
    try:
        with bars:
            yield
    finally:
        _current.reset(token)


def note(text: str) -> None:
    """A line above the bars (what step a long command is on); silent when no bar is shown."""
    progress = _current.get()
    if progress is not None:
        progress.console.print(f"[dim]{text}[/]")
