"""Commands for running reloop in production: run (cron), report, export. What is live and who
changes it (status, promote, rollback) are in `promotion.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reloop_cli.cli.common import (
    JsonOpt,
    MlflowOpt,
    SpecOpt,
    WorkspaceOpt,
    app,
    duration_option,
    emit_json,
    fmt,
    log_as_json,
    out,
    run_stage,
    setup_logging,
)
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "In production"


@app.command("run", rich_help_panel=PANEL)
def run_command(
    spec_path: SpecOpt = None,
    logs: Annotated[
        str | None, typer.Option(help="Folder, glob or file of raw logs to pick up.")
    ] = None,
    from_server: Annotated[
        bool,
        typer.Option(
            "--from-server", help="Join the clicks `reloop serve` logged onto its impressions."
        ),
    ] = False,
    log_dir: Annotated[
        Path | None, typer.Option(help="With --from-server: the server's logs (default: ours).")
    ] = None,
    as_of: Annotated[
        float | None,
        typer.Option(help="With --from-server: epoch seconds the windows close by (default now)."),
    ] = None,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    day: Annotated[str | None, typer.Option(help="Re-run (backfill) this day.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would happen; write nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Promote even if the gate refuses.")] = False,
    incremental: Annotated[
        str | None,
        typer.Option(
            help="Between nightly cycles: one warm-started pass over the newest hours ('6h'), "
            "gated like any candidate."
        ),
    ] = None,
    mlflow: MlflowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One scheduled retraining cycle: ingest, serve, train, judge, promote through the gate.

    With --from-server it trains the newest complete day (all its attribution windows closed
    by --as-of, default now); rows of a later day are ingested and wait for their night.

    Exit codes: 0 done or nothing new, 1 internal error, 2 bad input, 3 locked, 4 gate refused,
    5 inconclusive (too few holdout clicks to judge; live keeps serving), 6 training diverged
    (nothing published).

    Example (cron): reloop run --spec pipelines/sample.toml --logs /data/clicks/

    Every 6 hours: reloop run --logs /data/clicks/ --incremental 6h

    From reloop serve's logs: reloop run --from-server
    """
    from reloop_cli.errors import EXIT_GATE_REFUSED, EXIT_INCONCLUSIVE, BadInput
    from reloop_cli.operations.cycle import CycleOutcome, plan_cycle, run_cycle
    from reloop_cli.operations.incremental import run_incremental
    from reloop_cli.operations.report import write_report
    from reloop_cli.operations.served_cycle import run_server_cycle
    from reloop_cli.store.registry import Registry
    from reloop_cli.store.stored_spec import spec_for

    setup_logging(log_as_json())
    ws = Workspace(workspace)
    command = " ".join(
        ["run", "--from-server" if from_server else f"--logs={logs}"]
        + ([f"--day={day}"] if day else [])
        + ([f"--incremental={incremental}"] if incremental else [])
        + (["--force"] if force else [])
    )
    newest: list[float | None] = [None]  # --incremental in seconds, once parsed

    def cycle(registry, spec):
        if from_server:
            return run_server_cycle(
                ws,
                registry,
                spec,
                log_dir,
                as_of=as_of,
                day=day,
                force=force,
                incremental_seconds=newest[0],
            )
        if newest[0] is not None:
            return run_incremental(ws, registry, spec, logs, newest[0], force=force)
        return run_cycle(ws, registry, spec, logs, day=day, force=force)

    def action():
        if (logs is None) == (not from_server):
            raise BadInput("run: give --logs (raw logs) or --from-server (what `serve` logged)")
        if incremental is not None:
            if day or dry_run:
                raise BadInput(
                    "--incremental: updates the newest hours; not with --day or --dry-run"
                )
            newest[0] = duration_option("--incremental", incremental)
        spec = spec_for(ws, spec_path)
        if dry_run and from_server:
            raise BadInput("run: --dry-run plans raw logs only; the click join writes its files")
        if dry_run:
            return plan_cycle(ws, spec, logs, day)
        with ws.lock(), Registry(ws) as registry:
            run_id = registry.start_run(command)
            try:
                result = cycle(registry, spec)
            except BaseException as error:
                registry.finish_run(run_id, "failed", {"error": str(error)})
                raise
            registry.finish_run(run_id, result.outcome, result.to_dict())
        write_report(ws)
        if mlflow:
            from reloop_cli.operations.tracking import track_cycle

            track_cycle(mlflow, ws, spec, result)
        return result

    result = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
    else:
        out.print(_cycle_summary(result), soft_wrap=True)
    exit_codes = {
        CycleOutcome.REJECTED: EXIT_GATE_REFUSED,
        CycleOutcome.INCONCLUSIVE: EXIT_INCONCLUSIVE,
    }
    if result.outcome in exit_codes:
        raise typer.Exit(exit_codes[result.outcome])


def _late_summary(result) -> str:
    """One line per day that gained (or had refused) late rows this cycle."""
    lines = []
    for day, rows in sorted(result.late_rows.items()):
        if result.late_policy == "reject":
            lines.append(f'{day}: {rows:,} late row(s) rejected (data.late_rows = "reject")\n')
            continue
        trained = result.changed_trained_days.get(day)
        by = f"; trained on by v{', v'.join(map(str, trained))}, not retrained" if trained else ""
        lines.append(f"{day}: {rows:,} late row(s) appended{by}\n")
    return "".join(lines)


def _cycle_summary(result) -> str:
    from reloop_cli.serving.clickjoin import JoinResult

    warnings = "".join(f"new values: {line}\n" for line in result.novelty_warnings)
    joined = f"{JoinResult(**result.join).summary()}\n" if result.join else ""
    for record in result.quarantined:
        joined += f"quarantined {record['source']}: {record['reason']} (now {record['path']})\n"
    waiting = f"{result.waiting}\n" if result.waiting else ""
    ingest_only = result.outcome == "experiment" and result.gate is None  # says it below
    if result.experiment and not ingest_only:  # the look that ended it, or an A/A's night
        waiting = _experiment_line(result.experiment) + "\n" + waiting
    published = ""
    if result.published:
        p = result.published
        failed = " (on_publish FAILED: see reloop status)" if p.get("hook_returncode") else ""
        published = f"\npublished v{p['version']} for serving ({p['release']}){failed}"
    return _late_summary(result) + joined + warnings + waiting + _cycle_outcome(result) + published


def _started_line(experiment: dict) -> str:
    """The experiment this run's candidate started."""
    return (
        f"exposed to {experiment['share']:.1%} of units in experiment {experiment['id']} "
        f"({experiment['mode']}); judged nightly on its clicks"
    )


def _experiment_line(tonight: dict) -> str:
    """What happened to the running experiment tonight."""
    experiment = tonight.get("experiment") or {}
    return (
        f"experiment {experiment.get('id')}, night {experiment.get('looks')}: "
        f"{tonight.get('decision')} ({tonight.get('why')})"
    )


def _cycle_outcome(result) -> str:
    from reloop_cli.evaluation.statistics import format_interval
    from reloop_cli.operations.cycle import CycleOutcome

    if result.outcome == CycleOutcome.DRY_RUN:
        files = "".join(f"\n    {name}" for name in result.new_files)
        steps = "".join(f"\n  - {step}" for step in result.plan)
        return f"dry run for {result.day} (nothing written):{steps}{files}"
    live = f"v{result.live_after}" if result.live_after is not None else "none yet"
    if result.outcome == CycleOutcome.NOTHING_NEW and result.day is None:
        return f"nothing new to train on yet; live is {live}"
    if result.outcome == CycleOutcome.NOTHING_NEW and result.candidate is None:
        return f"nothing new: {result.day} has too few rows to train on; live is {live}"
    if result.outcome == CycleOutcome.NOTHING_NEW:
        return f"nothing new: {result.day} already has v{result.candidate}; live is {live}"
    if result.outcome == CycleOutcome.EXPERIMENT and result.gate is None:
        return _experiment_line(result.experiment) + f"; live is {live}"
    gate, candidate = result.gate, result.gate.candidate
    started = f" ({result.started})" if result.started else ""
    if result.update:
        started += (
            f", one pass on the newest {result.update['hours']:g} h "
            f"({result.update['rows']:,} rows)"
        )
    text = (
        f"{result.day}: candidate v{result.candidate}{started} on {candidate.rows:,} holdout rows "
        f"({candidate.clicks:,} clicks): AUC {fmt(candidate.auc)}, "
        f"Logloss {fmt(candidate.logloss)}"
    )
    if gate.difference:
        text += (
            f"; minus live v{result.live_before}: AUC "
            f"{format_interval(gate.difference.auc, signed=True)}, Logloss "
            f"{format_interval(gate.difference.logloss, signed=True)} "
            f"({gate.rule.confidence:.0%} intervals)"
        )
    elif gate.first_version:
        text += " (first version: absolute thresholds only)"
    reasons = "; ".join(gate.reasons)
    verdict = {
        CycleOutcome.PROMOTED: "promoted" + (" (FORCED past the gate)" if gate.forced else ""),
        CycleOutcome.REJECTED: f"rejected: {reasons}",
        CycleOutcome.INCONCLUSIVE: f"inconclusive, live keeps serving: {reasons}",
        CycleOutcome.EXPERIMENT: "passed the gate; ",
    }[result.outcome]
    if result.outcome == CycleOutcome.EXPERIMENT:
        verdict += _started_line(result.experiment_started)
    if result.outcome == CycleOutcome.PROMOTED and gate.difference and not gate.forced:
        verdict += (
            f" (not worse than live by more than {gate.rule.max_auc_drop} AUC / "
            f"{gate.rule.max_logloss_rise} Logloss at {gate.rule.confidence:.0%})"
        )
    return f"{text} -> {verdict}"


@app.command("report", rich_help_panel=PANEL)
def report_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file; default reports/report.html.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML page: per-day curves per arm, lift, calibration, versions.

    Example: reloop report --out report.html
    """
    from reloop_cli.operations.report import write_report

    ws = Workspace(workspace)
    path = run_stage(lambda: write_report(ws, out_file))
    if as_json:
        emit_json({"report": str(path)})
        return
    out.print(f"report written to {path}")


@app.command("export", rich_help_panel=PANEL)
def export_command(
    version: Annotated[int, typer.Option("--version", "-v", help="Version to export.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="torchscript or onnx.")] = "torchscript",
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    as_json: JsonOpt = False,
) -> None:
    """Export a version for serving outside reloop (input indices -> pCTR), with its feature map.

    Example: reloop export --version 3 --format torchscript --out model.pt
    """
    from reloop_cli.operations.export import export_version

    ws = Workspace(workspace)
    result = run_stage(lambda: export_version(ws, version, fmt, out_file))
    if as_json:
        emit_json(result.__dict__)
    else:
        out.print(f"v{version} exported as {fmt} to {result.path} (feature map {result.features})")
