"""`reloop replay`: a day run in time order with each adapter correcting the version between
two retrains, judged slot by slot against the unadapted version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reloop_cli.cli.common import (
    DayOpt,
    JsonOpt,
    SpecOpt,
    WorkspaceOpt,
    app,
    duration_option,
    emit_json,
    fmt,
    out,
    run_stage,
)
from reloop_cli.runtime.progress import note
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "The loop, compared"


@app.command(rich_help_panel=PANEL)
def replay(
    version: Annotated[int, typer.Option("--version", "-v", help="The version serving the day.")],
    day: DayOpt,
    slots: Annotated[int, typer.Option(help="Equal spans the day is cut into.")] = 24,
    label_delay: Annotated[
        str, typer.Option(help="How long a click takes to arrive ('1h', '30m', '0s').")
    ] = "1h",
    adapters: Annotated[
        str | None,
        typer.Option(help="Comma-separated adapters (default: all; base always runs)."),
    ] = None,
    tune_day: Annotated[
        str | None,
        typer.Option(help="Choose ReLoop2's weight and bits on this earlier day first."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the projections and the fine-tuning.")] = 0,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a day of logs as serving saw it: slot by slot, each predicted before its labels
    are known, the labels reaching the adapters only after --label-delay.

    Adapters: base (the version unadapted), intercept, field_bias, reloop2 (ReLoop2's error
    memory), incremental (one fine-tuning pass per labelled slot), reloop2+incremental. Each is
    paired against base on the same rows: AUC, gAUC, Logloss, calibration, per slot and pooled.
    Example: reloop replay --version 6 --day 2024-01-08 --tune-day 2024-01-07
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.experiments.replay import ReplayRequest, replay_day, tune_memory
    from reloop_cli.operations.replay_report import REPLAY_FILE
    from reloop_cli.spec.adapt import ADAPTERS
    from reloop_cli.store.stored_spec import spec_for

    ws = Workspace(workspace)

    def action():
        delay = duration_option("--label-delay", label_delay)
        names = tuple(a.strip() for a in adapters.split(",")) if adapters else ADAPTERS
        spec = spec_for(ws, spec_path)
        request = ReplayRequest(version, day, slots, delay, names, seed)
        grid = None
        if tune_day is not None:
            if tune_day >= day:
                raise BadInput(f"--tune-day: {tune_day} is not before --day {day}")
            note(f"choosing ReLoop2's weight and bits on {tune_day}")
            spec, grid = tune_memory(ws, spec, ReplayRequest(version, tune_day, slots, delay))
        result = replay_day(ws, spec, request, on_step=note)
        payload = {**result.to_dict(), "tuned_on": tune_day, "tuning": grid}
        ws.write_json(payload, ws.reports / REPLAY_FILE)
        return result, payload

    result, payload = run_stage(action)
    if as_json:
        emit_json(payload)
        return
    render_replay(result, payload)


def render_replay(result, payload: dict) -> None:
    from reloop_cli.evaluation.statistics import format_interval

    request = result.request
    table = Table(
        title=f"v{request.version} on {request.day}: {result.rows:,} rows, {result.clicks:,} "
        f"clicks, {request.slots} slots, labels after {request.label_delay_seconds:.0f} s"
    )
    for column in ("adapter", "AUC", "gAUC", "Logloss", "Σp/Σy", "AUC - base", "Logloss - base"):
        table.add_column(column, justify="left" if column == "adapter" else "right")
    for name, entry in result.pooled.items():
        versus = entry.get("vs_base")
        table.add_row(
            name,
            fmt(entry["auc"]["value"]),
            fmt(entry["gauc"]["value"]),
            fmt(entry["logloss"]["value"]),
            fmt(entry["calibration"], 3),
            format_interval(versus["auc"], signed=True) if versus else "",
            format_interval(versus["logloss"], signed=True) if versus else "",
        )
    out.print(table)
    for name, entry in result.pooled.items():
        if "vs_base" in entry:
            gauc = entry["vs_base"]["gauc"]
            out.print(
                f"{name}: gAUC - base {format_interval(gauc, signed=True)}; memory "
                f"{result.memory_bytes[name]:,} bytes"
            )
    if payload.get("tuned_on"):
        adapt = payload["settings"]
        out.print(
            f"ReLoop2 chosen on {payload['tuned_on']}: weight {adapt['memory_weight']}, "
            f"bits {adapt['memory_bits']}"
        )
