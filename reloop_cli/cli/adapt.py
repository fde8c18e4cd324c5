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
    slots: Annotated[
        int, typer.Option(help="Equal spans the day is cut into (with --through: equal rows).")
    ] = 24,
    through: Annotated[
        str | None,
        typer.Option(
            help="The paper's protocol: --day..this day as one test set, in --slots slices of "
            "equal rows, each predicted before its labels arrive."
        ),
    ] = None,
    label_delay: Annotated[
        str, typer.Option(help="How long a click takes to arrive ('1h', '30m', '0s').")
    ] = "1h",
    adapters: Annotated[
        str | None,
        typer.Option(help="Comma-separated adapters (default: all; base always runs)."),
    ] = None,
    tune_day: Annotated[
        str | None,
        typer.Option(help="Tune every adapter alike on this earlier day first."),
    ] = None,
    tune_budget: Annotated[
        int, typer.Option(help="Settings tried per adapter when tuning (the same for all).", min=1)
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the projections and the fine-tuning.")] = 0,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a day of logs as serving saw it: slot by slot, each predicted before its labels
    are known, the labels reaching the adapters only after --label-delay.

    Adapters: base (the version unadapted), intercept, field_bias, reloop2 (ReLoop2's error
    memory), incremental (one fine-tuning pass per labelled slot), reloop2+incremental. Each is
    paired against base on the same rows. The headline is within-slot (the mean over slots of
    the paired AUC difference, gAUC by user within slot), which recalibration from hour to hour
    cannot inflate; pooled figures, Logloss and calibration follow. --tune-day tunes every
    adapter on an earlier day with the same budget and prints what each chose.

    Example: reloop replay --version 6 --day 2024-01-08 --tune-day 2024-01-07

    Paper's protocol: reloop replay -v 3 --day 2024-01-04 --through 2024-01-05 --slots 10
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.experiments.replay import ReplayRequest, replay_day
    from reloop_cli.experiments.tuning import tune_adapters
    from reloop_cli.operations.replay_report import REPLAY_FILE
    from reloop_cli.spec.adapt import ADAPTERS
    from reloop_cli.store.stored_spec import spec_for

    ws = Workspace(workspace)

    def action():
        delay = duration_option("--label-delay", label_delay)
        names = tuple(a.strip() for a in adapters.split(",")) if adapters else ADAPTERS
        spec = spec_for(ws, spec_path)
        request = ReplayRequest(version, day, slots, delay, names, seed, through)
        tuning = None
        if tune_day is not None:
            if tune_day >= day:
                raise BadInput(f"--tune-day: {tune_day} is not before --day {day}")
            note(f"tuning every adapter on {tune_day} ({tune_budget} settings each)")
            tuned = tune_adapters(
                ws, spec, ReplayRequest(version, tune_day, slots, delay, names, seed), tune_budget
            )
            spec, tuning = tuned.spec, tuned.to_dict()
        result = replay_day(ws, spec, request, on_step=note)
        payload = {**result.to_dict(), "tuned_on": tune_day, "tuning": tuning}
        ws.write_json(payload, ws.reports / REPLAY_FILE)
        return result, payload

    result, payload = run_stage(action)
    if as_json:
        emit_json(payload)
        return
    render_replay(result, payload)


def render_replay(result, payload: dict) -> None:
    from reloop_cli.evaluation.statistics import format_interval
    from reloop_cli.operations.replay_report import within_slot_cells

    request = result.request
    span = f"{request.day}..{request.through}" if request.through else request.day
    table = Table(
        title=f"v{request.version} on {span}: {result.rows:,} rows, {result.clicks:,} "
        f"clicks, {request.slots} slots, labels after {request.label_delay_seconds:.0f} s; "
        "each adapter minus base, within slot"
    )
    for column in ("adapter", "AUC", "gAUC", "Logloss", "slots ranked"):
        table.add_column(column, justify="left" if column == "adapter" else "right")
    for name, entry in result.within_slot.items():
        table.add_row(*within_slot_cells(name, entry))
    out.print(table)
    pooled = Table(title="pooled over the day (AUC here includes between-slot calibration)")
    for column in ("adapter", "AUC", "Logloss", "Σp/Σy", "AUC - base", "Logloss - base"):
        pooled.add_column(column, justify="left" if column == "adapter" else "right")
    for name, entry in result.pooled.items():
        versus = entry.get("vs_base")
        pooled.add_row(
            name,
            fmt(entry["auc"]["value"]) if entry["auc"] else "-",
            fmt(entry["logloss"]["value"]),
            fmt(entry["calibration"], 3),
            format_interval(versus["auc"], signed=True) if versus and versus["auc"] else "",
            format_interval(versus["logloss"], signed=True) if versus else "",
        )
    out.print(pooled)
    for name, filled in result.occupancy.items():
        p50, p90 = filled["rows_per_read_p50"], filled["rows_per_read_p90"]
        empty = filled["empty_read_share"]
        out.print(
            f"{name} memory: {filled['buckets_used_mean']:,.0f} of {filled['buckets_per_array']:,} "
            f"buckets used per array; rows per queried bucket p50 {fmt(p50, 0)}, p90 "
            f"{fmt(p90, 0)}; {fmt(empty * 100 if empty is not None else None, 1)}% of reads "
            f"empty; {result.memory_bytes[name]:,} bytes"
        )
    tuning = payload.get("tuning")
    if tuning:
        for name, chosen in tuning["chosen"].items():
            settings = ", ".join(
                f"{key.split('_', 1)[1]} {value:g}" for key, value in chosen.items()
            )
            out.print(f"{name} chose on {payload['tuned_on']}: {settings}")
