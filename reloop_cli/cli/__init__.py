"""The `reloop` command line: parses options, calls the stage functions, renders with Rich.

Commands live in modules by purpose (stages, loop, operate, vocabulary); importing them
registers them on the one Typer `app`.
"""

from reloop_cli.cli import loop, operate, stages, vocabulary  # noqa: F401  (registers commands)
from reloop_cli.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
