"""The `reloop` command line: parses options, calls one library function, renders with Rich.

Commands live in modules by purpose (stages, verdicts, loop, operate, promotion, serve, ...);
importing them registers them on the one Typer `app`. Every command imports the library inside
its function body: that keeps `reloop --help` (and shell completion) from importing torch, scipy
and the model zoo, and is the one place in reloop where imports sit inside functions.
"""

import os
import sys

from reloop_cli.cli import (  # noqa: F401  (importing registers the commands)
    adapt,
    experiment,
    loop,
    operate,
    promotion,
    serve,
    stages,
    verdicts,
    vocabulary,
)
from reloop_cli.cli.common import app
from reloop_cli.errors import EXIT_INTERNAL

__all__ = ["app", "main"]


def main() -> None:
    """Run the command line. A command that fails leaves at once (`os._exit`, after flushing
    its output): the interpreter's own teardown would destroy native worker threads (Polars',
    torch's) that may still be running, and a C++ thread destroyed while running aborts the
    process (`terminate called without an active exception`, exit 134 where 2 was printed)."""
    try:
        app()
    except SystemExit as leaving:
        code = leaving.code
        if code in (0, None):
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else EXIT_INTERNAL)
