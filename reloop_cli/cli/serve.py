"""`reloop serve`: the live version over HTTP (uvicorn), logging what it served."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from reloop_cli.cli.common import (
    SpecOpt,
    WorkspaceOpt,
    app,
    err,
    log_as_json,
    run_stage,
    setup_logging,
)
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "In production"


@app.command("serve", rich_help_panel=PANEL)
def serve_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on, 1-65535.", min=1, max=65535)] = 8000,
    workers: Annotated[
        int,
        typer.Option(help="Server processes; each logs on its own, /metrics sums them all.", min=1),
    ] = 1,
    log_dir: Annotated[
        Path | None,
        typer.Option(help="Where impressions and clicks go (default: the workspace's)."),
    ] = None,
    trust_client_time: Annotated[
        bool,
        typer.Option(
            "--trust-client-time", help="Take a request's `time` (replaying logged traffic)."
        ),
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the exploration draws (default: serving.seed).")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="Torch and BLAS threads per process for the forward pass.", min=1)
    ] = 1,
    adapter: Annotated[
        str | None,
        typer.Option(
            help="Correct the live version between retrains: intercept, field_bias or reloop2 "
            "(default: serving.adapter; 'off' for none)."
        ),
    ] = None,
) -> None:
    """Serve the published live version: POST /score, POST /feedback, GET /health/live,
    GET /health/ready (and /health), GET /metrics.

    It reads only what `reloop run` (or `promote`, `rollback`, `train`) published, never the
    workspace lock, and swaps to a newly published version between requests. Writes must be
    JSON (Content-Type: application/json) from no foreign browser origin; with
    RELOOP_SERVE_TOKEN set, they need `Authorization: Bearer <token>`. SIGTERM or Ctrl-C lets
    requests in flight finish, writes the buffered logs and exits within twice
    serving.shutdown_seconds. With --adapter, each answer is the live version corrected by the
    day's labelled impressions (docs/guides/adapting.md).

    Example: reloop serve -w reloop-workspace --port 8000

    Example: reloop serve --adapter reloop2
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.serving.app import TOKEN_ENVIRONMENT
    from reloop_cli.serving.impressions import SERVER_COLUMNS
    from reloop_cli.serving.protocol import open_socket
    from reloop_cli.serving.service import ServiceConfig
    from reloop_cli.store.stored_spec import spec_for

    ws = Workspace(workspace)

    def setup() -> ServiceConfig:
        spec = spec_for(ws, spec_path)
        if adapter is not None:
            spec = spec.override("serving", adapter="" if adapter == "off" else adapter)
        if spec.serving.adapter and workers > 1:
            raise BadInput(
                f"--adapter {spec.serving.adapter}: needs --workers 1 (each process would keep "
                "a memory of its own and miss the feedback routed to the others)"
            )
        clash = set(SERVER_COLUMNS) & set(spec.data.feature_fields)
        if clash:
            raise BadInput(
                f"{spec.source}: field '{sorted(clash)[0]}' is a name the serving log uses"
            )
        folder = log_dir or ws.serving_logs
        if folder.exists() and not folder.is_dir():
            raise BadInput(f"--log-dir {folder}: is a file, not a folder")
        token = os.environ.get(TOKEN_ENVIRONMENT, "")
        return ServiceConfig(ws.serving, folder, spec, trust_client_time, seed, token)

    config = run_stage(setup)
    sock = run_stage(lambda: open_socket(host, port))
    setup_logging(log_as_json())
    err.print(
        f"reloop serve: http://{host}:{port} (workspace {ws.root}, logs {config.log_dir})",
        soft_wrap=True,
        markup=False,
    )
    if config.spec.serving.adapter:
        err.print(
            f"adapter {config.spec.serving.adapter}: an impression reaches it once its "
            f"attribution window ({config.spec.data.attribution_window}, "
            "data.attribution_window) has closed; until then answers are the version's own "
            "(see /health/ready and reloop_adapter_rows in /metrics)",
            soft_wrap=True,
            markup=False,
        )
    if host not in ("127.0.0.1", "localhost", "::1") and not config.token:
        err.print(
            f"warning: listening on {host} with no {TOKEN_ENVIRONMENT}: anyone who reaches "
            "this address can write impressions and clicks",
            soft_wrap=True,
            markup=False,
        )
    run_server(config, sock, workers, threads)


def run_server(config, sock, workers: int, threads: int) -> None:
    """uvicorn on the bound socket: one process in this one, or `workers` processes that share
    one metrics folder (prometheus-client's multiprocess mode) removed when they stop."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from reloop_cli.serving.app import ENVIRONMENT, create_app, limit_threads
    from reloop_cli.serving.metrics import MULTIPROCESS
    from reloop_cli.serving.protocol import HEADER_TIMEOUT_ATTRIBUTE, HeaderDeadlineProtocol
    from reloop_cli.serving.service import Service

    settings = config.spec.serving
    common = {
        "http": HeaderDeadlineProtocol,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_seconds)),
        "log_level": "warning",
    }
    if workers == 1:
        limit_threads(threads)
        server = uvicorn.Config(create_app(Service(config)), **common)
        setattr(server, HEADER_TIMEOUT_ATTRIBUTE, settings.header_timeout_seconds)
        uvicorn.Server(server).run(sockets=[sock])
        return
    os.environ[ENVIRONMENT] = json.dumps(
        {
            "serving_root": str(config.serving_root),
            "log_dir": str(config.log_dir),
            "spec": config.spec.to_dict(),
            "trust_client_time": config.trust_client_time,
            "seed": config.seed,
            "threads": threads,
        }
    )
    with tempfile.TemporaryDirectory(prefix="reloop-metrics-") as folder:
        os.environ[MULTIPROCESS] = folder  # read by each worker's prometheus-client at import
        server = uvicorn.Config(
            "reloop_cli.serving.app:from_environment", factory=True, workers=workers, **common
        )
        setattr(server, HEADER_TIMEOUT_ATTRIBUTE, settings.header_timeout_seconds)
        Multiprocess(server, sockets=[sock]).run()
