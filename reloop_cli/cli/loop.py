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
    _clean,
    _spec_for,
    _train_overrides,
    app,
    emit_json,
    fmt,
    out,
    run_stage,
)
from reloop_cli.progress import note
from reloop_cli.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "The loop, compared"


@app.command(rich_help_panel=PANEL)
def simulate(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Raw logs to ingest first (optional).")
    ] = None,
    days: Annotated[int, typer.Option(help="Days to evaluate (needs days + 1 of logs).")] = 7,
    arms: Annotated[str, typer.Option(help="Comma-separated losses to compare.")] = "bce,kd,reloop",
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
    """Run the retraining loop day by day, baseline vs KD vs ReLoop side by side.

    With no FILES and an empty workspace it runs on the bundled sample data.
    Example: reloop simulate --days 7
    """
    from reloop_cli.ingest import ingest as ingest_files
    from reloop_cli.registry import Registry
    from reloop_cli.report import save_simulation, write_report
    from reloop_cli.resources import bundled, sample_files
    from reloop_cli.simulate import parse_arms
    from reloop_cli.simulate import simulate as run_simulation
    from reloop_cli.spec import load_spec

    ws = Workspace(workspace)

    def action():
        chosen = parse_arms(arms)
        with ws.lock():
            inputs, spec_file = list(files or []), spec_path
            if not inputs and not ws.days():
                inputs = sample_files()
                spec_file = spec_file or bundled("pipelines/sample.toml")
            if inputs:
                if spec_file is None:
                    from reloop_cli.errors import BadInput

                    raise BadInput("simulate FILE...: pass --spec to say how to read them")
                spec = load_spec(spec_file)
                note(f"ingesting {len(inputs)} file(s) into {ws.root}")
                ingest_files(ws, spec, inputs, days=ingest_days)
            spec = _train_overrides(
                _spec_for(ws, spec_file), None, alpha, model, None, None, None
            ).override("train", device=device)
            with Registry(ws) as registry:
                result = run_simulation(ws, registry, spec, days, chosen, on_step=note)
            save_simulation(ws, _clean(result.to_dict()))
            report = write_report(ws)
            if mlflow:
                from reloop_cli.tracking import track_simulation

                track_simulation(mlflow, ws, spec, result)
            return result, report

    result, report = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
        return
    render_simulation(result)
    out.print(f"report: {report}")


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

    Example: reloop reproduce --spec pipelines/frappe.toml --models deepfm,dcn --seeds 3
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.reproduce import reproduce as run_reproduce

    ws = Workspace(workspace)

    def action():
        spec = _spec_for(ws, spec_path).override("train", epochs=epochs, device=device)
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
    rows = ", ".join(f"{k} {v:,}" for k, v in result.rows.items())
    table = Table(title=f"test AUC / Logloss, mean ± std over seeds {result.seeds} ({rows})")
    for column in ("model", "loss", "AUC", "Logloss", "ΔAUC", "ΔLogloss"):
        table.add_column(column, justify="left" if column in ("model", "loss") else "right")
    for arm in result.arms:
        (auc_m, auc_s), (ll_m, ll_s) = arm.stat("auc"), arm.stat("logloss")
        lift = result.lift(arm)
        name = arm.loss if arm.alpha is None else f"{arm.loss} alpha={arm.alpha:g}"
        table.add_row(
            arm.model,
            name,
            f"{auc_m:.4f} ± {auc_s:.4f}",
            f"{ll_m:.4f} ± {ll_s:.4f}",
            "" if arm.loss == "bce" else f"{lift['auc_pct']:+.2f}%",
            "" if arm.loss == "bce" else f"{lift['logloss_pct']:+.2f}%",
        )
    parents = {}
    for run in result.previous:
        parents.setdefault(run["model"], []).append(run["auc"])
    table.caption = (
        f"previous model: {result.parent['share']:.0%} of train, "
        f"<= {result.parent['epochs']} epochs; its test AUC "
        + ", ".join(f"{m} {sum(v) / len(v):.4f}" for m, v in parents.items())
    )
    out.print(table)


def render_simulation(result) -> None:
    """Per-day next-day AUC/Logloss per arm, means, and ReLoop's lift over the baseline."""
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
    for arm in arms:
        lift = result.lift(arm)
        if lift:
            out.print(
                f"{arm} vs bce: AUC {lift['auc_pct']:+.2f}%, Logloss {lift['logloss_pct']:+.2f}%"
            )
