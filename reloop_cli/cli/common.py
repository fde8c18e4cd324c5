"""What every command shares: the Typer app, the consoles, option types, error handling, JSON.

The CLI only parses and renders; logic lives in the stage modules. Errors a user can fix print
one line on stderr and exit with the code in `errors.py`; `--debug` (or RELOOP_DEBUG=1) shows
the traceback instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reloop_cli import __version__
from reloop_cli.cli.group import ReloopGroup
from reloop_cli.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, ReloopError, storage_problem
from reloop_cli.store.workspace import json_ready

app = typer.Typer(
    cls=ReloopGroup,
    help="Keep a CTR model fresh: retrain daily, each version learning from its parent's mistakes.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
T = TypeVar("T")


def _workspace_folder(path: Path) -> Path:
    """A workspace is a folder (made if missing); a file given as one is refused in one line,
    before the command reads or writes anything."""
    if path.exists() and not path.is_dir():
        err.print(
            f"[bold red]error:[/] --workspace {escape(str(path))}: is a file, not a folder",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    return path


WorkspaceOpt = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        envvar="RELOOP_WORKSPACE",
        help="Workspace folder.",
        callback=_workspace_folder,
    ),
]
SpecOpt = Annotated[
    Path | None,
    typer.Option("--spec", "-s", help="Pipeline spec (TOML); default: the one ingested with."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DayOpt = Annotated[str, typer.Option("--day", "-d", help="Day, YYYY-MM-DD.")]
MlflowOpt = Annotated[
    str | None,
    typer.Option(
        "--mlflow",
        envvar="RELOOP_MLFLOW_URI",
        help="Also track in MLflow at this URI, e.g. sqlite:///mlflow.db (needs the mlflow extra).",
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="cpu, cuda or auto (a GPU when one is visible).")
]


def _version_callback(show: bool) -> None:
    if show:
        out.print(f"reloop {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True)
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log JSON lines on stderr (reloop run, serve).")
    ] = False,
) -> None:
    """Global options; they may also follow the subcommand (`reloop simulate --quiet`)."""
    _options.update(debug=debug, quiet=quiet, log_json=log_json)


_options = {"debug": False, "quiet": False, "log_json": False}


def _debugging() -> bool:
    return _options["debug"] or bool(os.environ.get("RELOOP_DEBUG"))


def log_as_json() -> bool:
    """Whether `--log-json` was given (anywhere on the command line)."""
    return _options["log_json"]


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        )


def setup_logging(as_json: bool) -> None:
    """Logs of `run` and `serve` go to stderr (cron mails it; log shippers read JSON lines with
    --log-json)."""
    logger = logging.getLogger("reloop")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonLines() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)


def duration_option(option: str, text: str) -> float:
    """Seconds of a duration option ('30m', '1h', '0s'), or a one-line error naming it."""
    from reloop_cli.errors import BadInput
    from reloop_cli.spec.serving import duration_seconds

    try:
        return duration_seconds(text)
    except ValueError:
        raise BadInput(f"{option}: '{text}' is not like 30m, 1h or 0s") from None


def run_stage(action: Callable[[], T]) -> T:
    """Run a stage (with progress bars on a terminal); a `ReloopError` becomes one line on stderr
    and its exit code."""
    from reloop_cli.runtime.progress import show_progress

    try:
        with show_progress(not _options["quiet"]):
            return action()
    except ReloopError as error:
        if _debugging():
            raise
        err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted; the workspace is unchanged by the unfinished step")
        raise typer.Exit(130) from None
    except Exception as error:  # a bug, unless the machine refused a write
        if _debugging():
            raise
        problem = storage_problem(error)
        if problem is not None:
            err.print(
                f"[bold red]error:[/] {escape(problem)}; every write is atomic, so nothing was "
                "left half-written: make room (or fix the permissions) and run again",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_BAD_INPUT) from None
        err.print(
            f"[bold red]internal error:[/] {type(error).__name__}: {escape(str(error))} "
            "(rerun with --debug)",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def emit_json(payload: dict) -> None:
    sys.stdout.write(json.dumps(json_ready(payload), sort_keys=False) + "\n")


def fmt(value: float | None, digits: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def _train_overrides(spec, loss, alpha, model, epochs, seed, warm_start):
    spec = spec.override(
        "train", loss=loss, alpha=alpha, epochs=epochs, seed=seed, warm_start=warm_start
    )
    return spec.override("model", name=model)


spec_app = typer.Typer(help="Pipeline specs: check what a spec resolves to.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")


@spec_app.command("check")
def spec_check(
    path: Annotated[Path, typer.Argument(help="Spec file (TOML).")],
    as_json: JsonOpt = False,
) -> None:
    """Validate a spec and print every setting as resolved (TOML, then RELOOP_* variables).

    Example: RELOOP_TRAIN_ALPHA=0.3 reloop spec check pipelines/sample.toml
    """
    from reloop_cli.spec.pipeline import load_spec

    spec = run_stage(lambda: load_spec(path))
    resolved = spec.to_dict()
    if as_json:
        emit_json(resolved)
        return
    out.print(f"{path}: valid")
    table = Table("setting", "value", title=f"spec '{spec.name}' as resolved")
    for section in [k for k in resolved if k != "name"]:
        for key, value in resolved[section].items():
            table.add_row(f"{section}.{key}", json.dumps(value))
    out.print(table)
