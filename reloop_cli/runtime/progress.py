"""Progress bars for long steps, shown only where a person is watching.

Stage functions report through `task(...)`; the CLI decides whether anything is drawn
(`show_progress`): a Rich bar on stderr when stderr is a terminal and --quiet is not given,
nothing otherwise (cron, pipes, tests). Stage code never needs to know which.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_current: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
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


@contextlib.contextmanager
def show_progress(enabled: bool) -> Iterator[None]:
    """Draw bars on stderr for the duration, if `enabled` and stderr is a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield
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
