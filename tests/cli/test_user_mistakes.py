"""Internal errors are bugs: a user's mistake (or the machine refusing a write) ends in one line
naming the path, the bad-input exit code, and nothing half-written."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.errors import EXIT_BAD_INPUT, storage_problem
from reloop_cli.store.workspace import Workspace
from tests.helpers import REPO, workspace_files

runner = CliRunner()
SPEC = str(REPO / "pipelines" / "sample.toml")
DAY = str(REPO / "sample_data" / "clicks-2024-01-01.parquet")


def ingest(*args: str):
    return runner.invoke(app, ["ingest", DAY, *args])


def one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_a_file_given_as_the_workspace_is_bad_input_not_a_crash(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    line = one_line_error(ingest("--spec", SPEC, "-w", str(target)))
    assert f"{target}: is a file" in line and "internal error" not in line
    assert target.read_text() == "mine\n"
    nested = one_line_error(ingest("--spec", SPEC, "-w", str(target / "ws")))
    assert f"{target}: is a file" in nested


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["report"],
        ["status"],
        ["promote", "1"],
        ["rollback"],
        ["run", "--from-server"],
        ["train", "--day", "2024-01-01"],
        ["score", "--version", "1", "--day", "2024-01-01"],
        ["eval", "--version", "1", "--day", "2024-01-01"],
        ["simulate"],
        ["revisits"],
        ["replay", "--version", "1", "--day", "2024-01-01"],
    ],
    ids=lambda c: c[0],
)
def test_a_file_as_workspace_is_one_line_in_every_command(tmp_path, command):
    """Reproduction: `reloop serve -w <a file>` and `reloop report -w <a file>` were
    tracebacks or internal errors."""
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    line = one_line_error(runner.invoke(app, [*command, "-w", str(target)]))
    assert f"--workspace {target}: is a file, not a folder" in line
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize(
    "command",
    [["promote", "3"], ["rollback"], ["status"], ["eval", "--version", "1", "--day", "2024-01-01"]],
    ids=lambda c: c[0],
)
def test_a_command_refused_on_an_empty_folder_writes_nothing_there(tmp_path, command):
    """Reproduction: `promote` on an empty folder created registry.sqlite (and a .lock)."""
    folder = tmp_path / "empty"
    folder.mkdir()
    line = one_line_error(runner.invoke(app, [*command, "-w", str(folder)]))
    assert "no versions here yet" in line
    assert list(folder.iterdir()) == []


def test_an_incremental_run_from_the_server_on_a_fresh_workspace_says_none_is_live(tmp_path):
    """Reproduction: `run --from-server --incremental` on a fresh workspace printed `live is
    vNone`."""
    folder = tmp_path / "fresh"
    result = runner.invoke(
        app, ["run", "--from-server", "--incremental", "6h", "--spec", SPEC, "-w", str(folder)]
    )
    assert result.exit_code == 0, result.output
    assert "live is none yet" in result.output and "vNone" not in result.output


def test_a_spec_that_is_a_folder_says_so(tmp_path):
    line = one_line_error(ingest("--spec", str(REPO / "pipelines"), "-w", str(tmp_path / "ws")))
    assert "is a folder, not a spec file" in line
    assert not (tmp_path / "ws").exists()


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in (root ignores file modes)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    for candidate in (Path("/sys"), Path("/proc/sys")):
        try:
            (candidate / "reloop-probe").mkdir()
        except OSError:
            return candidate
        (candidate / "reloop-probe").rmdir()
    pytest.skip("no read-only place to try on this machine")


def test_a_workspace_on_a_read_only_path_is_bad_input(tmp_path):
    workspace = _read_only_folder(tmp_path) / "reloop-ws"
    line = one_line_error(ingest("--spec", SPEC, "-w", str(workspace)))
    assert f"{workspace}: cannot write the workspace here" in line


def _small_file_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))


def test_a_write_the_disk_refuses_leaves_the_workspace_as_it_was(tmp_path):
    """A real refused write: the process may not write files past 50 KB, as on a full disk."""
    ws = tmp_path / "ws"
    result = subprocess.run(
        [sys.executable, "-m", "reloop_cli", "ingest", DAY, "--spec", SPEC, "-w", str(ws)],
        capture_output=True,
        text=True,
        cwd=REPO,
        preexec_fn=_small_file_limit,
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert len(lines) == 1 and "internal error" not in lines[0]
    assert "nothing was left half-written" in lines[0]
    assert workspace_files(Workspace(ws)) == []


@pytest.mark.parametrize(
    "error,meaning",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/ws/logs/x"), "no space left"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
        (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), "disk"),
        (__import__("sqlite3").OperationalError("database or disk is full"), "no space left"),
    ],
)
def test_refused_writes_are_recognised_from_each_library(error, meaning):
    assert meaning in storage_problem(error)


def test_a_bug_is_not_taken_for_a_refused_write():
    assert storage_problem(ValueError("no space left on device")) is None
    assert storage_problem(OSError(errno.ENOENT, "No such file")) is None
