"""Progress where no terminal watches: a plain line at a steady interval, naming the step."""

from __future__ import annotations

import time

from reloop_cli.runtime.progress import PROGRESS_SECONDS, note, show_progress, task


def test_a_long_step_without_a_terminal_logs_a_line_at_a_steady_interval(monkeypatch, capsys):
    """Reproduction: a run whose output was not a terminal printed nothing for its whole
    length (25 minutes on a loaded machine)."""
    monkeypatch.setenv(PROGRESS_SECONDS, "0.1")
    with show_progress(True):
        note("day 3 (2024-01-04): reloop trains its next version")
        with task("training", 10) as bar:
            bar.advance(4)
            time.sleep(0.45)
    lines = capsys.readouterr().err.strip().splitlines()
    assert 3 <= len(lines) <= 6  # one every 0.1 s, not one per step
    assert lines[-1].startswith("reloop: 0m00s, day 3 (2024-01-04): reloop trains")
    assert lines[-1].endswith("training 4/10")


def test_quiet_logs_nothing(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_SECONDS, "0.05")
    with show_progress(False):
        note("a step")
        time.sleep(0.2)
    assert capsys.readouterr().err == ""
