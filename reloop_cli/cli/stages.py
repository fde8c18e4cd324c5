"""Commands that run one stage by hand: synth, ingest, train, score (eval and compare, which
judge a version, are in `verdicts.py`)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reloop_cli.cli.common import (
    DayOpt,
    DeviceOpt,
    JsonOpt,
    SpecOpt,
    WorkspaceOpt,
    _train_overrides,
    app,
    emit_json,
    out,
    run_stage,
)
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "Stages, by hand"


def _launch_torchrun(nproc: int) -> int:
    """Re-run this `reloop train` command under torchrun with `nproc` local processes."""
    import subprocess

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        argv.append(arg)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "reloop_cli",
        *argv,
    ]
    return subprocess.call(command)


@app.command(rich_help_panel=PANEL)
def synth(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the day files.")],
    days: Annotated[int, typer.Option(help="Days to simulate.")] = 8,
    rows_per_day: Annotated[int, typer.Option(help="Impressions per day.")] = 30_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    start_date: Annotated[str, typer.Option(help="First day.")] = "2024-01-01",
    users: Annotated[int, typer.Option(help="Users on day 0.")] = 300,
    items: Annotated[int, typer.Option(help="Items on day 0.")] = 1_000,
    new_items_per_day: Annotated[int, typer.Option(help="New items each day.")] = 30,
    new_users_per_day: Annotated[int, typer.Option(help="New users each day.")] = 0,
    item_lifetime_days: Annotated[
        int, typer.Option(help="Days an item is shown before it retires (0: never).")
    ] = 0,
    user_lifetime_days: Annotated[
        int, typer.Option(help="Days a user stays before leaving (0: never).")
    ] = 0,
    intraday_trend: Annotated[
        float, typer.Option(help="Within a day, the day's new items trend: +this logit by 23:00.")
    ] = 0.0,
    intraday_base_shift: Annotated[
        float, typer.Option(help="Within a day, the base logit moves from -this to +this.")
    ] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Generate a simulated, drifting click log (one Parquet file per day).

    Example: reloop synth --days 8 --rows-per-day 20000 --seed 0 --out sample_data
    At the scale of real logs (millions of ids, 200,000 new a day, retiring after 14 days):
    reloop synth --days 61 --rows-per-day 1000000 --users 2000000 --items 1000000
    --new-items-per-day 150000 --new-users-per-day 50000 --item-lifetime-days 14
    --user-lifetime-days 30 --out big
    Drifting within each day (`reloop replay`): reloop synth --intraday-trend 1.0 --out d
    """
    from reloop_cli.experiments.synth import SynthConfig, synthesize

    config = SynthConfig(
        days=days,
        rows_per_day=rows_per_day,
        seed=seed,
        start_date=start_date,
        users=users,
        initial_items=items,
        new_items_per_day=new_items_per_day,
        new_users_per_day=new_users_per_day,
        item_lifetime_days=item_lifetime_days,
        user_lifetime_days=user_lifetime_days,
        intraday_trend=intraday_trend,
        intraday_base_shift=intraday_base_shift,
    )
    paths = run_stage(lambda: synthesize(config, out_dir))
    if as_json:
        emit_json({"files": [str(p) for p in paths], "rows_per_day": rows_per_day, "seed": seed})
    else:
        out.print(f"wrote {len(paths)} days x {rows_per_day} rows to {out_dir} (seed {seed})")


@app.command(rich_help_panel=PANEL)
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(help="CSV, TSV, Parquet or libfm files (also .gz/.zst), or folders."),
    ],
    spec_path: Annotated[Path, typer.Option("--spec", "-s", help="Pipeline spec (TOML).")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    days: Annotated[
        int | None, typer.Option(help="Split logs without a time column into N pseudo-days.")
    ] = None,
    start_date: Annotated[str | None, typer.Option(help="First pseudo-day.")] = None,
    jobs: Annotated[int, typer.Option(help="Parallel processes, one file at a time each.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Validate raw logs and store them as Parquet partitioned by day.

    A folder stands for every data file under it; Hive-style key=value folders become columns.
    Example: reloop ingest data/*.libfm --spec pipelines/frappe.toml --days 10
    """
    from reloop_cli.data.ingest import ingest as ingest_files
    from reloop_cli.spec.pipeline import load_spec

    ws = Workspace(workspace)

    def action():
        spec = load_spec(spec_path)
        with ws.lock():
            return ingest_files(ws, spec, list(files), days=days, start_date=start_date, jobs=jobs)

    result = run_stage(action)
    if as_json:
        emit_json(result.__dict__)
        return
    table = Table("day", "rows", title=f"ingested into {ws.root}")
    for day, rows in sorted(result.rows_per_day.items()):
        table.add_row(day, f"{rows:,}")
    out.print(table)
    out.print(f"{result.rows:,} rows, {result.rejected:,} rejected")
    for note in result.time_notes:
        out.print(f"[dim]{note}[/]")
    verb = "appended to" if result.late_policy == "append" else "rejected for"
    for day, rows in sorted(result.late_rows.items()):
        out.print(f"[yellow]late:[/] {rows:,} row(s) {verb} {day}, a day ingested before")
    for day, rows in sorted(result.duplicates.items()):
        relabelled = result.relabelled.get(day, 0)
        changed = (
            f" ({relabelled:,} with another label; the first label kept)" if relabelled else ""
        )
        out.print(
            f"[yellow]duplicates:[/] {rows:,} impression(s) of {day} held already, skipped{changed}"
        )
    for path in result.skipped:
        out.print(f"[yellow]already ingested, skipped:[/] {path}")


@app.command(rich_help_panel=PANEL)
def train(
    day: DayOpt,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    loss: Annotated[str | None, typer.Option(help="bce, kd or reloop.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the self-correction term.")] = None,
    model: Annotated[str | None, typer.Option(help="lr, fm, deepfm, widedeep, dcn, ...")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Most epochs (early stopping may end sooner).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Training seed (shuffles, init, the validation slice).")
    ] = None,
    warm_start: Annotated[
        bool | None,
        typer.Option(
            "--warm-start/--from-scratch",
            help="Start from the parent's weights, or from new ones (default: train.warm_start).",
        ),
    ] = None,
    parent: Annotated[
        int | None, typer.Option(help="Parent version; default: the live one.")
    ] = None,
    chain: Annotated[str, typer.Option(help="Which chain of versions to extend.")] = "main",
    promote: Annotated[
        bool,
        typer.Option("--promote/--no-promote", help="Make it live (and publish it) when trained."),
    ] = True,
    device: DeviceOpt = None,
    nproc: Annotated[
        int, typer.Option(help="Processes on this machine (launches torchrun); 1: no DDP.")
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Train the next version on the window of days ending at DAY, using its parent's scores.

    Example: reloop train --day 2024-01-03 --loss reloop --alpha 0.5
    Several processes: reloop train --day 2024-01-03 --nproc 2
    (the same as: torchrun --nproc_per_node 2 -m reloop_cli train --day 2024-01-03)
    """
    from reloop_cli.columns import MAIN_CHAIN
    from reloop_cli.operations.deploy import publish_live
    from reloop_cli.store.registry import Registry
    from reloop_cli.store.stored_spec import spec_for
    from reloop_cli.training import distributed
    from reloop_cli.training.fitting import resolve_device
    from reloop_cli.training.train import Lineage, train_version

    if nproc > 1 and not distributed.is_distributed():
        raise typer.Exit(_launch_torchrun(nproc))
    ws = Workspace(workspace)

    def action():
        spec = _train_overrides(
            spec_for(ws, spec_path), loss, alpha, model, epochs, seed, warm_start
        ).override("train", device=device)
        resolve_device(spec.train.device)  # before the registry or anything else is written
        # Under torchrun only rank 0 holds the lock and writes; the others train their shard.
        lock = ws.lock() if distributed.is_main() else contextlib.nullcontext()
        try:
            with lock, Registry(ws) as registry:
                lineage = Lineage(chain=chain, parent=parent, promote=promote)
                result = train_version(ws, registry, spec, day, lineage)
                if promote and chain == MAIN_CHAIN and distributed.is_main():
                    publish_live(ws, registry, chain)  # the chain's new live version serves
        except BaseException:
            distributed.shutdown(wait=False)
            raise
        distributed.shutdown()
        return result

    result = run_stage(action)
    if not distributed.is_main():
        return
    if as_json:
        emit_json(result.to_dict())
        return
    out.print(
        f"version {result.version} ({result.loss}, parent {result.parent or '-'}) trained on "
        f"{result.window[0]}..{result.window[-1]}: {result.rows:,} rows"
        + (
            f", {result.rows_without_last:,} without ỹ_last (plain BCE)"
            if result.rows_without_last is not None
            else ""
        )
        + f", {result.started.describe()}, {result.seconds:.1f}s"
        + (" [live]" if promote else " [candidate]")
    )


@app.command(rich_help_panel=PANEL)
def score(
    version: Annotated[int, typer.Option("--version", "-v", help="Version to score with.")],
    day: Annotated[
        list[str] | None, typer.Option("--day", "-d", help="Day, YYYY-MM-DD (repeatable).")
    ] = None,
    all_days: Annotated[bool, typer.Option("--all-days", help="Every ingested day.")] = False,
    jobs: Annotated[int, typer.Option(help="Parallel processes, one per day partition.")] = 1,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    force: Annotated[bool, typer.Option(help="Re-score even if scores exist.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score days' logs with a version (what serving would have logged).

    Example: reloop score --version 1 --day 2024-01-02 --day 2024-01-03 --jobs 2
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.versions.score import score_days

    ws = Workspace(workspace)

    def action():
        days = ws.days() if all_days else list(day or [])
        if not days:
            raise BadInput("score: give --day D (repeatable) or --all-days")
        if jobs < 1:
            raise BadInput(f"--jobs: {jobs} must be >= 1")
        with ws.lock():
            return score_days(ws, version, days, jobs=jobs, force=force)

    results = run_stage(action)
    if as_json:
        payload = [r.to_dict() for r in results]
        emit_json(payload[0] if len(payload) == 1 else {"scores": payload})
        return
    for result in results:
        note = " (existing scores)" if result.reused else ""
        out.print(f"v{version} scored {result.rows:,} rows of {result.day} -> {result.path}{note}")
