"""Commands that run the whole loop for comparison: simulate and reproduce."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reloop_cli.cli.common import (
    DeviceOpt,
    JsonOpt,
    MlflowOpt,
    SpecOpt,
    WorkspaceOpt,
    app,
    duration_option,
    emit_json,
    fmt,
    out,
    run_stage,
)
from reloop_cli.cli.online import (
    render_closed_loop_worlds,
    render_online_policy,
    render_over_http,
)
from reloop_cli.runtime.progress import note
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "The loop, compared"


@app.command(rich_help_panel=PANEL)
def simulate(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Raw logs to ingest first (optional).")
    ] = None,
    days: Annotated[int, typer.Option(help="Days to evaluate (needs days + 1 of logs).")] = 7,
    arms: Annotated[
        str,
        typer.Option(
            help="Comma-separated losses to compare; closed loop: loss+adapter (bce+reloop2) "
            "serves corrected hour by hour."
        ),
    ] = "bce,kd,reloop",
    seeds: Annotated[
        int, typer.Option(help="Repeat the loop with N training seeds (spec seed, +1, ...).")
    ] = 1,
    world_seeds: Annotated[
        int | None,
        typer.Option(help="Run in N simulated worlds (synth seeds 0..N-1; 0 is the sample)."),
    ] = None,
    world_rows: Annotated[int, typer.Option(help="Rows per day of each simulated world.")] = 30_000,
    closed_loop: Annotated[
        bool,
        typer.Option(
            "--closed-loop", help="Each arm's model decides what its users see (synth worlds)."
        ),
    ] = False,
    over_http: Annotated[
        bool,
        typer.Option(
            "--over-http",
            help="Closed loop: one arm served by a real `reloop serve` on loopback, retrained "
            "nightly by `reloop run --from-server`, beside the same loop in process.",
        ),
    ] = False,
    online_policy: Annotated[
        bool,
        typer.Option(
            "--online-policy",
            help="The loop over HTTP, where candidates earn promotion by the spec's [experiment] "
            "(canary); each verdict set against the world's truth, beside the gate alone's.",
        ),
    ] = False,
    mode: Annotated[
        str, typer.Option(help="Closed loop: paired (same requests) or ab.")
    ] = "paired",
    requests: Annotated[int, typer.Option(help="Closed loop: requests a day.")] = 6_000,
    candidates: Annotated[int, typer.Option(help="Closed loop: candidates a request.")] = 20,
    users: Annotated[int, typer.Option(help="Closed loop: users in each world.")] = 300,
    slots: Annotated[int, typer.Option(help="Closed loop: items shown a request.")] = 5,
    policy: Annotated[str, typer.Option(help="Closed loop: epsilon or softmax.")] = "epsilon",
    epsilon: Annotated[float, typer.Option(help="Closed loop: exploration share.")] = 0.05,
    temperature: Annotated[float, typer.Option(help="Closed loop: softmax temperature.")] = 0.1,
    intraday_trend: Annotated[
        float, typer.Option(help="Closed loop: the day's new items rise by this logit by 23:00.")
    ] = 0.0,
    intraday_base_shift: Annotated[
        float, typer.Option(help="Closed loop: the base logit moves from -this to +this a day.")
    ] = 0.0,
    label_delay: Annotated[
        str, typer.Option(help="Closed loop: how late an adapted arm's labels arrive.")
    ] = "1h",
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    ingest_days: Annotated[
        int | None, typer.Option(help="Pseudo-days for FILES without a time column.")
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="Override the spec's alpha.")] = None,
    model: Annotated[str | None, typer.Option(help="Override the spec's model.")] = None,
    device: DeviceOpt = None,
    mlflow: MlflowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the retraining loop day by day, baseline vs KD vs ReLoop side by side, each arm
    compared with bce by paired tests on the same rows (per day and pooled).

    With no FILES and an empty workspace it runs on the bundled sample data. --seeds and
    --world-seeds repeat the loop and report what holds across the repeats. In the closed
    loop an arm `bce+reloop2` serves through ReLoop2's memory hour by hour (with
    --intraday-trend 2, in days that drift).

    Example: reloop simulate --days 7
    Example: reloop simulate --days 7 --seeds 3 --world-seeds 3
    Example: reloop simulate --closed-loop --days 14 --world-seeds 3
    Example: reloop simulate --closed-loop --over-http --arms reloop --days 7
    Example: reloop simulate --online-policy --arms reloop --days 12 --users 2000
    Example: reloop simulate --closed-loop --arms bce,bce+reloop2
    """
    from reloop_cli.evaluation.policies import Policy
    from reloop_cli.experiments.simulation import (
        ClosedLoopSettings,
        SimulationRequest,
        run_simulation,
    )

    delay = run_stage(lambda: duration_option("--label-delay", label_delay))
    over_http = over_http or online_policy  # the policy runs with real processes
    closed = ClosedLoopSettings(
        mode,
        requests,
        candidates,
        Policy(policy, epsilon, temperature, slots),
        over_http,
        intraday_trend,
        intraday_base_shift,
        delay,
        users,
        online_policy,
    )
    request = SimulationRequest(
        days=days,
        arms=arms,
        seeds=seeds,
        world_seeds=world_seeds,
        world_rows=world_rows,
        files=tuple(files or ()),
        spec_file=spec_path,
        ingest_days=ingest_days,
        alpha=alpha,
        model=model,
        device=device,
        mlflow=mlflow,
        closed_loop=closed if closed_loop or over_http else None,
    )
    outcome = run_stage(lambda: run_simulation(Workspace(workspace), request, on_step=note))
    if as_json:
        emit_json(outcome.payload)
    elif online_policy:
        render_online_policy(outcome.result, outcome.payload["summary"])
    elif over_http:
        render_over_http(outcome.result)
    elif closed_loop:
        render_closed_loop_worlds(outcome.result, outcome.payload)
    elif hasattr(outcome.result, "repeats"):
        render_repeats(outcome.result)
    else:
        render_simulation(outcome.result)
    if not as_json:
        out.print(f"report: {outcome.report}")


@app.command(rich_help_panel=PANEL)
def reproduce(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Logs to use (default: the workspace's).")
    ] = None,
    spec_path: SpecOpt = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated backbones.")] = None,
    seeds: Annotated[int, typer.Option(help="Training seeds (spec seed, +1, ...).")] = 3,
    alphas: Annotated[
        str | None, typer.Option(help="Comma-separated alphas for kd/reloop.")
    ] = None,
    split: Annotated[
        str, typer.Option(help="train:valid:test ratio, or 'files' (3 FILES).")
    ] = "8:1:1",
    split_seed: Annotated[int, typer.Option(help="Seed of the random split.")] = 0,
    parent_share: Annotated[
        float, typer.Option(help="Share of training rows the previous model sees.")
    ] = 0.9,
    parent_epochs: Annotated[
        int | None, typer.Option(help="Max epochs of the previous model (default: the spec's).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the spec's max epochs.")] = None,
    device: DeviceOpt = None,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    as_json: JsonOpt = False,
) -> None:
    """The paper's static protocol: previous model on 90% of train gives ỹ_last; bce vs kd vs
    reloop per backbone, test AUC/Logloss as mean ± std over seeds. Writes nothing.

    --parent-share / --parent-epochs make the previous model weaker or stronger.

    Example: reloop reproduce --spec pipelines/frappe.toml --models deepfm,dcn
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.experiments.reproduce import reproduce as run_reproduce
    from reloop_cli.store.stored_spec import spec_for

    ws = Workspace(workspace)

    def action():
        spec = spec_for(ws, spec_path).override("train", epochs=epochs, device=device)
        try:
            alpha_list = [float(a) for a in (alphas or str(spec.train.alpha)).split(",")]
        except ValueError:
            raise BadInput(
                f"--alphas: '{alphas}' is not a comma-separated list of numbers"
            ) from None
        model_list = [m.strip() for m in (models or spec.model.name).split(",") if m.strip()]
        return run_reproduce(
            ws,
            spec,
            files=list(files or []),
            models=model_list,
            seeds=seeds,
            alphas=alpha_list,
            split=split,
            split_seed=split_seed,
            parent_share=parent_share,
            parent_epochs=parent_epochs,
            on_step=note,
        )

    result = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
        return
    from reloop_cli.evaluation.statistics import format_interval

    rows = ", ".join(f"{k} {v:,}" for k, v in result.rows.items())
    table = Table(title=f"test AUC / Logloss, mean ± std over seeds {result.seeds} ({rows})")
    for column in ("model", "loss", "AUC", "Logloss", "ΔAUC [95% CI]", "p", "ΔLogloss"):
        table.add_column(column, justify="left" if column in ("model", "loss") else "right")
    for arm in result.arms:
        (auc_m, auc_s), (ll_m, ll_s) = arm.stat("auc"), arm.stat("logloss")
        lift = result.lift(arm)
        name = arm.loss if arm.alpha is None else f"{arm.loss} alpha={arm.alpha:g}"
        difference = result.difference(arm, "auc")
        paired = arm.loss != "bce" and len(arm.runs) > 1
        table.add_row(
            arm.model,
            name,
            f"{auc_m:.4f} ± {auc_s:.4f}",
            f"{ll_m:.4f} ± {ll_s:.4f}",
            format_interval(difference, signed=True) if paired else "",
            f"{difference.p_value:.2g}" if paired else "",
            "" if arm.loss == "bce" else f"{lift['logloss_pct']:+.2f}%",
        )
    parents = {}
    for run in result.previous:
        parents.setdefault(run["model"], []).append(run["auc"])
    table.caption = (
        "Δ: paired by seed, Student's t across seeds; "
        f"previous model: {result.parent['share']:.0%} of train, "
        f"<= {result.parent['epochs']} epochs; its test AUC "
        + ", ".join(f"{m} {sum(v) / len(v):.4f}" for m, v in parents.items())
    )
    out.print(table)


def render_simulation(result) -> None:
    """Per-day next-day AUC/Logloss per arm and their means; then each arm against bce, paired
    on the same rows, pooled over the days, with its verdict."""
    from reloop_cli.evaluation import statistics
    from reloop_cli.evaluation.statistics import format_interval

    arms = list(result.arms)
    table = Table(title="next-day AUC / Logloss (each day scored by the version trained before it)")
    table.add_column("day", no_wrap=True)
    if result.oracle:
        table.add_column("oracle\nAUC", style="dim", justify="right")
    for arm in arms:
        table.add_column(f"{arm}\nAUC", justify="right")
        table.add_column(f"{arm}\nLogloss", justify="right")
    for i, day in enumerate(result.days):
        cells = [day]
        if result.oracle:
            cells.append(fmt(result.oracle[i]["auc"]))
        for arm in arms:
            row = result.arms[arm].days[i]
            cells += [fmt(row["auc"]), fmt(row["logloss"])]
        table.add_row(*cells)
    means = ["mean"]
    if result.oracle:
        means.append(fmt(sum(o["auc"] for o in result.oracle) / len(result.oracle)))
    for arm in arms:
        means += [fmt(result.arms[arm].mean_auc), fmt(result.arms[arm].mean_logloss)]
    table.add_row(*means, style="bold", end_section=True)
    out.print(table)
    first = result.arms[arms[0]].days[0]
    out.print(
        f"one day's AUC is known to about ±{fmt((first['auc_high'] - first['auc_low']) / 2)} "
        f"(95% interval, {first['rows']:,} rows, {first['clicks']:,} clicks on {first['day']})"
    )
    for arm, comparison in result.comparisons.items():
        days_apart = sum(d["auc"].excludes_zero() for d in comparison.days)
        verdicts = comparison.verdicts()
        out.print(
            f"{arm} vs {result.baseline}, paired over {len(comparison.days)} days: "
            f"AUC {format_interval(comparison.auc, signed=True)} ({verdicts['auc']}); "
            f"Logloss {format_interval(comparison.logloss, signed=True)} ({verdicts['logloss']}); "
            f"{days_apart} of {len(comparison.days)} days alone exclude zero; smallest "
            f"detectable AUC lift {fmt(statistics.detectable_difference(comparison.auc.se))}"
        )
    if result.comparisons:
        out.print(
            "[dim]These tests say whether these versions differ on these rows; whether a loss "
            "helps needs repeats: --seeds N (and --world-seeds N on simulated data).[/]"
        )


def render_repeats(result) -> None:
    """What holds across repeats: each arm's mean over them, and its lift over bce."""
    from reloop_cli.evaluation.statistics import format_interval

    summary = result.summary()
    seeds = sorted({r.seed for r in result.repeats})
    worlds = sorted({r.world for r in result.repeats if r.world is not None})
    where = f"worlds {worlds} x " if worlds else ""
    table = Table(
        title=f"across {len(result.repeats)} repeats ({where}seeds {seeds}): mean [95% CI, t]"
    )
    for column in ("arm", "mean AUC", "mean Logloss", f"AUC lift vs {result.baseline}", "p"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    table.add_column("repeats better / worse / n.s.")
    for arm, entry in summary.items():
        lift = entry.get("lift_auc")
        tally = entry.get("repeats_auc")
        table.add_row(
            arm,
            format_interval(entry["mean_auc"])
            if len(result.repeats) > 1
            else fmt(entry["mean_auc"].value),
            fmt(entry["mean_logloss"].value),
            format_interval(lift, signed=True) if lift and len(result.repeats) > 1 else "",
            f"{lift.p_value:.2g}" if lift and lift.p_value is not None else "",
            f"{tally['better']} / {tally['worse']} / {tally['no_difference']}" if tally else "",
        )
    out.print(table)
    for arm, entry in summary.items():
        if "verdict_auc" in entry:
            out.print(
                f"{arm} vs {result.baseline}: AUC {entry['verdict_auc']}; "
                f"Logloss {entry['verdict_logloss']}"
            )
