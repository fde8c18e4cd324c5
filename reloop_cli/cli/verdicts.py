"""Commands that judge versions by hand: eval (one version on a day) and compare (two versions
on the same rows, with paired tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reloop_cli.cli.common import DayOpt, JsonOpt, WorkspaceOpt, app, emit_json, fmt, out, run_stage
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "Stages, by hand"


@app.command("eval", rich_help_panel=PANEL)
def evaluate(
    version: Annotated[int, typer.Option("--version", "-v", help="Version to evaluate.")],
    day: DayOpt,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    as_json: JsonOpt = False,
) -> None:
    """AUC, Logloss, counts and calibration of a version on a day (and the oracle's, if known).

    Example: reloop eval --version 2 --day 2024-01-04
    """
    from reloop_cli.evaluation.evaluate import evaluate_day
    from reloop_cli.store.registry import Registry

    ws = Workspace(workspace)

    def action():
        Registry.require(ws)
        with ws.lock(), Registry(ws) as registry:
            return evaluate_day(ws, registry, version, day, with_offpolicy=True)

    result = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
        return
    m = result.metrics.to_dict()
    table = Table("metric", f"v{version}", *(["oracle"] if result.oracle else []), title=f"{day}")
    oracle = result.oracle or {}
    table.add_row(
        "AUC [95% CI]",
        f"{fmt(m['auc'])} [{fmt(m['auc_low'])}, {fmt(m['auc_high'])}]",
        *([fmt(oracle["auc"])] if oracle else []),
    )
    table.add_row(
        "Logloss [95% CI]",
        f"{fmt(m['logloss'])} [{fmt(m['logloss_low'])}, {fmt(m['logloss_high'])}]",
        *([fmt(oracle["logloss"])] if oracle else []),
    )
    for key in ("rows", "clicks"):
        table.add_row(key, f"{m[key]:,}", *([""] if oracle else []))
    for key, label in (
        ("ctr", "observed CTR"),
        ("mean_pctr", "mean pCTR"),
        ("calibration", "pCTR / CTR"),
        ("ece", "ECE"),
    ):
        table.add_row(label, fmt(m[key]), *([""] if oracle else []))
    out.print(table)
    out.print(
        f"smallest AUC difference these {m['rows']:,} rows ({m['clicks']:,} clicks) could detect "
        f"between two versions: {fmt(m['detectable_auc_difference'])} (95% confidence, 80% power; "
        "`reloop compare` pairs two versions on the same rows and detects less)"
    )
    _print_offpolicy(result.offpolicy, {"version": f"v{version}"})


def _print_offpolicy(estimates: dict | None, names: dict[str, str]) -> None:
    """Where the day has logged slates: each version's online CTR, estimated off-policy."""
    if not estimates:
        return
    from reloop_cli.evaluation.statistics import format_interval

    observed = estimates["logging_ctr"]
    out.print(
        f"online CTR, estimated from the day's logged slates (policy {estimates['policy']['kind']}"
        f", logged CTR {observed['value']:.4f}):"
    )
    for key, name in names.items():
        snips, ips = estimates[key]["snips_ctr"], estimates[key]["ips_ctr"]
        out.print(
            f"  {name}: SNIPS {format_interval(snips)}, IPS {ips['value']:.4f}; effective requests"
            f" {estimates[key]['effective_requests']:,.0f} of {estimates[key]['requests']:,}"
        )


@app.command(rich_help_panel=PANEL)
def compare(
    version_a: Annotated[int, typer.Argument(help="The reference version (e.g. the live one).")],
    version_b: Annotated[int, typer.Argument(help="The version compared with it.")],
    day: DayOpt,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    confidence: Annotated[float, typer.Option(help="Level of the intervals.")] = 0.95,
    as_json: JsonOpt = False,
) -> None:
    """Is B better than A on DAY, or is it noise? Paired tests on the same rows: DeLong's for
    AUC, the mean per-row difference for Logloss, each with its interval and p-value.

    Example: reloop compare 3 4 --day 2024-01-05
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.evaluation.compare import compare_versions

    ws = Workspace(workspace)

    def action():
        if not 0 < confidence < 1:
            raise BadInput(f"--confidence: {confidence} is not in (0, 1)")
        with ws.lock():
            return compare_versions(ws, version_a, version_b, day, confidence)

    result = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
        return
    from reloop_cli.evaluation.statistics import format_interval

    level = f"{confidence:.0%}"
    diff, verdicts = result.difference, result.verdicts()
    table = Table(
        "metric",
        f"v{result.a}",
        f"v{result.b}",
        f"v{result.b} - v{result.a} [{level} CI]",
        "p",
        title=f"{day}: {diff.rows:,} rows, {diff.clicks:,} clicks",
    )
    for key, name in (("auc", "AUC"), ("logloss", "Logloss")):
        estimate = getattr(diff, key)
        table.add_row(
            name,
            fmt(getattr(result.metrics_a, key)),
            fmt(getattr(result.metrics_b, key)),
            format_interval(estimate, signed=True),
            f"{estimate.p_value:.2g}",
        )
    out.print(table)
    out.print(f"AUC: {verdicts['auc']}; Logloss: {verdicts['logloss']}")
    out.print(
        f"smallest AUC difference this paired comparison detects: "
        f"{fmt(result.detectable_auc_difference)} ({level} confidence, 80% power)"
    )
    _print_offpolicy(result.offpolicy, {"a": f"v{result.a}", "b": f"v{result.b}"})
