"""The `reloop` command line: parses options, calls one library function, renders with Rich.

Commands live in modules by purpose (stages, loop, operate, vocabulary); importing them
registers them on the one Typer `app`. Every command imports the library inside its function
body: that keeps `reloop --help` (and shell completion) from importing torch, scipy and the
model zoo, and is the one place in reloop where imports sit inside functions.
"""

from reloop_cli.cli import adapt, loop, operate, serve, stages, vocabulary  # noqa: F401  (registers)
from reloop_cli.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
