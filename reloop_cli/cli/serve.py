"""`reloop serve`: the live version over HTTP (uvicorn), logging what it served."""

from __future__ import annotations

import json
import os
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
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Server processes; each logs and counts on its own.")
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
        int, typer.Option(help="Torch threads per process for the forward pass.")
    ] = 1,
    adapter: Annotated[
        str | None,
        typer.Option(
            help="Correct the live version between retrains: intercept, field_bias or reloop2 "
            "(default: serving.adapter; 'off' for none)."
        ),
    ] = None,
) -> None:
    """Serve the published live version: POST /score, POST /feedback, GET /health, GET /metrics.

    It reads only what `reloop run` (or `promote`, `rollback`, `train`) published, never the
    workspace lock, and swaps to a newly published version between requests. SIGTERM or Ctrl-C
    writes the buffered logs and exits. With --adapter, each answer is the live version
    corrected by the day's labelled impressions (docs/guides/adapting.md).
    Example: reloop serve -w /srv/reloop --port 8000 --adapter reloop2
    """
    import uvicorn

    from reloop_cli.errors import BadInput
    from reloop_cli.serving.app import ENVIRONMENT, create_app, limit_threads
    from reloop_cli.serving.service import SERVER_COLUMNS, Service, ServiceConfig
    from reloop_cli.store.stored_spec import spec_for

    ws = Workspace(workspace)

    def setup() -> ServiceConfig:
        if workers < 1 or threads < 1:
            raise BadInput("workers and threads: each must be >= 1")
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
        return ServiceConfig(ws.serving, log_dir or ws.serving_logs, spec, trust_client_time, seed)

    config = run_stage(setup)
    limit_threads(threads)
    setup_logging(log_as_json())
    err.print(f"reloop serve: http://{host}:{port} (workspace {ws.root}, logs {config.log_dir})")
    if workers == 1:
        uvicorn.run(create_app(Service(config)), host=host, port=port, log_level="warning")
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
    uvicorn.run(
        "reloop_cli.serving.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
