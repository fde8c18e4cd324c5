"""The Typer group every command hangs on: global options wherever they are typed, and help that
reads as prose at any terminal width.

People type `reloop simulate --quiet` as often as `reloop --quiet simulate`; click accepts a
group's options only before the subcommand, so the global flags are moved in front of it before
parsing. Docstrings wrap at 100 columns in the source; Typer's rich help keeps those line breaks,
which cut sentences mid-line in an 80-column terminal, so each paragraph is joined into one line
(the terminal wraps it) and only example lines keep their own line. Boolean flags take no value,
so they show no type label.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer
from typer.core import TyperGroup

GLOBAL_FLAGS = ("--quiet", "-q", "--debug", "--log-json")
VERSION_FLAG = "--version"  # global too, unless the command has a --version of its own
# Lines of a docstring that stand on their own: a label and a colon before a command
# ("Example: reloop ...", "Every 6 hours: reloop ..."), and "(the same as: ...)".
LABEL = re.compile(r"^([A-Z][\w ()-]*: (RELOOP_\w+=\S+ )?(reloop|torchrun) |\(the same as)")
COMMAND = re.compile(r"^(reloop|torchrun) ")


def hoist_global_flags(args: list[str], version_is_global: bool = False) -> list[str]:
    """`args` with the global flags moved in front of the subcommand (none after a `--`);
    `--version` too when the subcommand has none of its own."""
    cut = args.index("--") if "--" in args else len(args)
    head, tail = args[:cut], args[cut:]
    hoisted = (*GLOBAL_FLAGS, VERSION_FLAG) if version_is_global else GLOBAL_FLAGS
    flags = [a for a in head if a in hoisted]
    return [*flags, *(a for a in head if a not in hoisted), *tail]


def reflow(text: str | None) -> str | None:
    """A docstring as help text: each paragraph one line, example lines on their own."""
    if not text:
        return text
    paragraphs = []
    for block in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in (raw.strip() for raw in block.splitlines()):
            starts_own = LABEL.match(line) or (COMMAND.match(line) and lines[-1].endswith(":"))
            if lines and not starts_own:
                lines[-1] = f"{lines[-1]} {line}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _tidy_params(params: list) -> list:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: no `<bool>` beside it
        if getattr(param, "help", None):
            param.help = reflow(param.help)
    return params


def _tidy(command: Any) -> None:
    command.help = reflow(command.help)
    if command.short_help:
        command.short_help = reflow(command.short_help)
    _tidy_params(command.params)
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)
        if not isinstance(sub, ReloopGroup):  # its --help option is made when help is shown
            sub.get_params = lambda ctx, made=sub.get_params: _tidy_params(made(ctx))


class ReloopGroup(TyperGroup):
    """`reloop`'s command group: tidied help, global flags accepted after the subcommand."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _tidy(self)

    def get_params(self, ctx: typer.Context) -> list:
        return _tidy_params(super().get_params(ctx))  # also the completion options Typer adds

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        name = next((a for a in args if not a.startswith("-")), None)
        command = self.commands.get(name) if name else None
        own = command is not None and any(
            VERSION_FLAG in getattr(param, "opts", ()) for param in command.params
        )
        return super().parse_args(ctx, hoist_global_flags(list(args), not own))
