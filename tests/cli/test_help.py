"""The help reads as people expect: no sentence cut mid-line at 80 columns, no type label on a
flag, and global options typed after the subcommand."""

from __future__ import annotations

import itertools
import re

import pytest
import typer.main
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.cli.group import COMMAND, LABEL, hoist_global_flags, reflow

runner = CliRunner()
WIDTH = 80
SENTENCE_END = (".", ":", ";", ")", "!", "?", ",")


def command_paths() -> list[list[str]]:
    """Every command, as the words that reach it (`[]` is `reloop` itself)."""
    paths, group = [[]], typer.main.get_command(app)
    for name, command in group.commands.items():
        paths.append([name])
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
    return paths


def rendered_help(path: list[str]) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


def broken_lines(text: str) -> list[str]:
    """Lines that end short of the edge in mid-sentence while the next word would have fit: a
    line break that came from the source, not from wrapping."""
    lines, found = text.splitlines(), []
    for above, below in itertools.pairwise(lines):
        edge = above.rfind("│") if above.rstrip().endswith("│") else WIDTH
        body, next_body = above[:edge].rstrip(), below[: below.rfind("│")].rstrip() or below
        start = len(body) - len(body.lstrip(" │"))
        next_text = next_body.lstrip(" │")
        words = next_text.split()
        if not body.strip(" │─╭╮╰╯") or not words or start != len(next_body) - len(next_text):
            continue
        if body.endswith(SENTENCE_END) or words[0].startswith(("-", "[", "*")):
            continue
        if LABEL.match(next_text) or COMMAND.match(next_text):
            continue  # an example or a command on its own line, as the docstring has it
        if len(body) + 1 + len(words[0]) < edge - 1:
            found.append(f"{above!r} / {below!r}")
    return found


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "reloop")
def test_no_sentence_is_broken_mid_line_at_80_columns(path):
    assert broken_lines(rendered_help(path)) == []


def test_the_check_finds_a_sentence_broken_by_the_source():
    """The check itself: a docstring shown with its source line breaks is caught."""
    docstring = (
        "│ simulate   Run the retraining loop day by day, baseline vs KD vs ReLoop side │\n"
        "│            by side, each arm                                                  │\n"
        "│            compared with bce by paired tests on the same rows (per day and    │\n"
    )
    assert len(broken_lines(docstring)) == 1


def test_flags_show_no_type_label():
    text = rendered_help(["run"])
    assert "--force" in text and "--dry-run" in text
    assert "<bool>" not in text and "<bool>" not in rendered_help([])


def test_paragraphs_become_one_line_and_examples_keep_their_own():
    text = reflow(
        """First sentence goes
        on here.

        Example: reloop train --day D
        Several processes: reloop train --day D --nproc 2
        """
    )
    assert text == (
        "First sentence goes on here.\n\n"
        "Example: reloop train --day D\nSeveral processes: reloop train --day D --nproc 2"
    )


def test_global_flags_are_moved_before_the_subcommand():
    assert hoist_global_flags(["simulate", "--days", "1", "--quiet"]) == [
        "--quiet",
        "simulate",
        "--days",
        "1",
    ]
    assert hoist_global_flags(["run", "--log-json", "--", "--debug"]) == [
        "--log-json",
        "run",
        "--",
        "--debug",
    ]


def test_quiet_and_debug_work_after_the_subcommand(tmp_path):
    bad = runner.invoke(app, ["ingest", str(tmp_path / "gone.csv"), "--spec", "x", "--quiet"])
    assert bad.exit_code == 2 and "No such option" not in bad.output
    debug = runner.invoke(app, ["spec", "check", str(tmp_path / "none.toml"), "--debug"])
    assert "No such option" not in debug.output
    assert debug.exception is not None  # --debug: the error is raised, not turned into a line


def docstring_examples(path: list[str]) -> list[str]:
    """The example lines of a command's docstring: a label, a colon, then the command."""
    command = typer.main.get_command(app)
    for word in path:
        command = command.commands[word]
    source = command.callback.__doc__ if command.callback else ""
    lines = [line.strip() for line in (source or "").splitlines()]
    return [line for line in lines if EXAMPLE.match(line)]


EXAMPLE = re.compile(r"^[A-Z][\w ()-]*: (RELOOP_\w+=\S+ )?(reloop|torchrun) ")


@pytest.mark.parametrize("path", command_paths()[1:], ids=lambda p: " ".join(p))
def test_every_example_reads_whole_on_one_line_at_80_columns(path):
    """Reproduction: `reloop run --help` ran two examples into one line, and examples wrapped
    between a flag and its value."""
    shown = [line.strip(" │") for line in rendered_help(path).splitlines()]
    for example in docstring_examples(path):
        assert example in shown, f"{example!r} is not one whole line of the help"


@pytest.mark.parametrize("path", command_paths()[1:], ids=lambda p: " ".join(p))
def test_every_option_says_what_it_does(path):
    """Reproduction: `train --help` had no text for --epochs, --seed and --warm-start."""
    command = typer.main.get_command(app)
    for word in path:
        command = command.commands[word]
    silent = [
        param.opts[0]
        for param in command.params
        if param.param_type_name == "option" and not (param.help or "").strip()
    ]
    assert silent == []


def test_run_help_names_every_exit_code():
    text = " ".join(rendered_help(["run"]).split())
    for code in range(7):
        assert f"{code} " in text.split("Exit codes:")[1]


def test_global_version_works_after_a_command_without_its_own():
    """Reproduction: `reloop status --version` was refused though the README says global
    options work after the command; a command with its own --version keeps it."""
    status = runner.invoke(app, ["status", "--version"])
    assert status.exit_code == 0 and status.output.startswith("reloop ")
    own = runner.invoke(app, ["export", "--version", "x"])
    assert own.exit_code == 2 and "reloop 0" not in own.output
