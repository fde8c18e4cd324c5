"""The `reloop` command line: parses options, calls the stage functions, renders with Rich.

No pipeline logic lives here. Errors a user can fix print one line on stderr and exit with the
code in `errors.py`; `--debug` (or RELOOP_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from reloop_cli import __version__
from reloop_cli.errors import EXIT_INTERNAL, ReloopError
from reloop_cli.progress import note
from reloop_cli.workspace import DEFAULT_WORKSPACE, Workspace

app = typer.Typer(
    help="Keep a CTR model fresh: retrain daily, each version learning from its parent's mistakes.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
T = TypeVar("T")

WorkspaceOpt = Annotated[
    Path, typer.Option("--workspace", "-w", envvar="RELOOP_WORKSPACE", help="Workspace folder.")
]
SpecOpt = Annotated[
    Path | None,
    typer.Option("--spec", "-s", help="Pipeline spec (TOML); default: the one ingested with."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DayOpt = Annotated[str, typer.Option("--day", "-d", help="Day, YYYY-MM-DD.")]
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
) -> None:
    if debug:
        os.environ["RELOOP_DEBUG"] = "1"
    _options["quiet"] = quiet


_options = {"quiet": False}


def run_stage(action: Callable[[], T]) -> T:
    """Run a stage (with progress bars on a terminal); a `ReloopError` becomes one line on stderr
    and its exit code."""
    from reloop_cli.progress import show_progress

    try:
        with show_progress(not _options["quiet"]):
            return action()
    except ReloopError as error:
        if os.environ.get("RELOOP_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted; the workspace is unchanged by the unfinished step")
        raise typer.Exit(130) from None
    except Exception as error:  # a bug: say so, and how to see it
        if os.environ.get("RELOOP_DEBUG"):
            raise
        err.print(
            f"[bold red]internal error:[/] {type(error).__name__}: {error} (rerun with --debug)"
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def _clean(value: Any) -> Any:
    """JSON has no NaN: turn it into null, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def emit_json(payload: dict) -> None:
    sys.stdout.write(json.dumps(_clean(payload), sort_keys=False) + "\n")


def fmt(value: float | None, digits: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def _spec_for(ws: Workspace, path: Path | None):
    from reloop_cli.errors import BadInput
    from reloop_cli.features import stored_spec
    from reloop_cli.spec import load_spec

    if path is not None:
        return load_spec(path)
    spec = stored_spec(ws)
    if spec is None:
        raise BadInput(f"{ws.root}: no spec given and nothing ingested yet; pass --spec")
    return spec


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
    from reloop_cli.spec import load_spec

    spec = run_stage(lambda: load_spec(path))
    resolved = spec.to_dict()
    if as_json:
        emit_json(resolved)
        return
    out.print(f"{path}: valid")
    table = Table("setting", "value", title=f"spec '{spec.name}' as resolved")
    for section in ("data", "model", "train", "gate"):
        for key, value in resolved[section].items():
            table.add_row(f"{section}.{key}", json.dumps(value))
    out.print(table)


# --- commands ----------------------------------------------------------------------------------
@app.command()
def synth(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the day files.")],
    days: Annotated[int, typer.Option(help="Days to simulate.")] = 8,
    rows_per_day: Annotated[int, typer.Option(help="Impressions per day.")] = 30_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    start_date: Annotated[str, typer.Option(help="First day.")] = "2024-01-01",
    as_json: JsonOpt = False,
) -> None:
    """Generate a simulated, drifting click log (one Parquet file per day).

    Example: reloop synth --days 8 --rows-per-day 20000 --seed 0 --out sample_data
    """
    from reloop_cli.synth import SynthConfig, synthesize

    config = SynthConfig(days=days, rows_per_day=rows_per_day, seed=seed, start_date=start_date)
    paths = run_stage(lambda: synthesize(config, out_dir))
    if as_json:
        emit_json({"files": [str(p) for p in paths], "rows_per_day": rows_per_day, "seed": seed})
    else:
        out.print(f"wrote {len(paths)} days x {rows_per_day} rows to {out_dir} (seed {seed})")


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="CSV, TSV, Parquet or libfm files.")],
    spec_path: Annotated[Path, typer.Option("--spec", "-s", help="Pipeline spec (TOML).")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    days: Annotated[
        int | None, typer.Option(help="Split logs without a time column into N pseudo-days.")
    ] = None,
    start_date: Annotated[str | None, typer.Option(help="First pseudo-day.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate raw logs and store them as Parquet partitioned by day.

    Example: reloop ingest ../shared/data/frappe/*.libfm --spec pipelines/frappe.toml --days 10
    """
    from reloop_cli.features import remember_spec
    from reloop_cli.ingest import ingest as ingest_files
    from reloop_cli.spec import load_spec

    ws = Workspace(workspace)

    def action():
        spec = load_spec(spec_path)
        with ws.lock():
            result = ingest_files(ws, spec, list(files), days=days, start_date=start_date)
            remember_spec(ws, spec)
            return result

    result = run_stage(action)
    if as_json:
        emit_json(result.__dict__)
        return
    table = Table("day", "rows", title=f"ingested into {ws.root}")
    for day, rows in sorted(result.rows_per_day.items()):
        table.add_row(day, f"{rows:,}")
    out.print(table)
    out.print(f"{result.rows:,} rows, {result.rejected:,} rejected")
    for path in result.skipped:
        out.print(f"[yellow]already ingested, skipped:[/] {path}")


@app.command()
def train(
    day: DayOpt,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    loss: Annotated[str | None, typer.Option(help="bce, kd or reloop.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the self-correction term.")] = None,
    model: Annotated[str | None, typer.Option(help="lr, fm, deepfm, widedeep, dcn, ...")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    warm_start: Annotated[bool | None, typer.Option("--warm-start/--from-scratch")] = None,
    parent: Annotated[
        int | None, typer.Option(help="Parent version; default: the live one.")
    ] = None,
    chain: Annotated[str, typer.Option(help="Which chain of versions to extend.")] = "main",
    promote: Annotated[bool, typer.Option("--promote/--no-promote")] = True,
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
    from reloop_cli import distributed
    from reloop_cli.fitting import resolve_device
    from reloop_cli.registry import Registry
    from reloop_cli.train import train_version

    if nproc > 1 and not distributed.is_distributed():
        raise typer.Exit(_launch_torchrun(nproc))
    ws = Workspace(workspace)

    def action():
        spec = _train_overrides(
            _spec_for(ws, spec_path), loss, alpha, model, epochs, seed, warm_start
        ).override("train", device=device)
        resolve_device(spec.train.device)  # before the registry or anything else is written
        # Under torchrun only rank 0 holds the lock and writes; the others train their shard.
        lock = ws.lock() if distributed.is_main() else contextlib.nullcontext()
        try:
            with lock, Registry(ws) as registry:
                return train_version(
                    ws, registry, spec, day, chain=chain, parent=parent, promote=promote
                )
        finally:
            distributed.shutdown()

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
        + f", {result.seconds:.1f}s"
        + (" [live]" if promote else " [candidate]")
    )


@app.command()
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
    from reloop_cli.score import score_days

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


@app.command("eval")
def evaluate(
    version: Annotated[int, typer.Option("--version", "-v", help="Version to evaluate.")],
    day: DayOpt,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    as_json: JsonOpt = False,
) -> None:
    """AUC, Logloss, counts and calibration of a version on a day (and the oracle's, if known).

    Example: reloop eval --version 2 --day 2024-01-04
    """
    from reloop_cli.evaluate import evaluate_day
    from reloop_cli.registry import Registry

    ws = Workspace(workspace)

    def action():
        with ws.lock(), Registry(ws) as registry:
            return evaluate_day(ws, registry, version, day)

    result = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
        return
    m = result.metrics
    table = Table("metric", f"v{version}", *(["oracle"] if result.oracle else []), title=f"{day}")
    oracle = result.oracle or {}
    table.add_row("AUC", fmt(m["auc"]), *([fmt(oracle["auc"])] if oracle else []))
    table.add_row("Logloss", fmt(m["logloss"]), *([fmt(oracle["logloss"])] if oracle else []))
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


@app.command()
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
    as_json: JsonOpt = False,
) -> None:
    """Run the retraining loop day by day, baseline vs KD vs ReLoop side by side.

    With no FILES and an empty workspace it runs on the bundled sample data.
    Example: reloop simulate --days 7
    """
    from reloop_cli.features import remember_spec
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
                remember_spec(ws, spec)
            spec = _train_overrides(
                _spec_for(ws, spec_file), None, alpha, model, None, None, None
            ).override("train", device=device)
            with Registry(ws) as registry:
                result = run_simulation(ws, registry, spec, days, chosen, on_step=note)
            save_simulation(ws, _clean(result.to_dict()))
            report = write_report(ws)
            return result, report

    result, report = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
        return
    render_simulation(result)
    out.print(f"report: {report}")


@app.command()
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
    epochs: Annotated[int | None, typer.Option(help="Override the spec's max epochs.")] = None,
    device: DeviceOpt = None,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    as_json: JsonOpt = False,
) -> None:
    """The paper's static protocol: previous model on 90% of train gives ỹ_last; bce vs kd vs
    reloop per backbone, test AUC/Logloss as mean ± std over seeds. Writes nothing.

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
    out.print(table)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        )


def _setup_logging(as_json: bool) -> None:
    """Cycle logs go to stderr (cron mails it; log shippers read JSON lines with --log-json)."""
    logger = logging.getLogger("reloop")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonLines() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)


@app.command("run")
def run_command(
    spec_path: Annotated[Path, typer.Option("--spec", "-s", help="Pipeline spec (TOML).")],
    logs: Annotated[str, typer.Option(help="Folder, glob or file of raw logs to pick up.")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    day: Annotated[str | None, typer.Option(help="Re-run (backfill) this day.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would happen; write nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Promote even if the gate refuses.")] = False,
    log_json: Annotated[bool, typer.Option(help="Log JSON lines on stderr.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """One scheduled retraining cycle: ingest, serve, train, judge, promote through the gate.

    Exit codes: 0 done or nothing new, 2 bad input, 3 locked, 4 gate refused, 1 internal error.
    Example (cron): reloop run --spec pipelines/sample.toml --logs /data/clicks/ -w /srv/reloop
    """
    from reloop_cli.cycle import plan_cycle, run_cycle
    from reloop_cli.errors import EXIT_GATE_REFUSED
    from reloop_cli.registry import Registry
    from reloop_cli.report import write_report
    from reloop_cli.spec import load_spec

    _setup_logging(log_json)
    ws = Workspace(workspace)
    command = " ".join(
        ["run", f"--logs={logs}"]
        + ([f"--day={day}"] if day else [])
        + (["--force"] if force else [])
    )

    def action():
        spec = load_spec(spec_path)
        if dry_run:
            return plan_cycle(ws, spec, logs, day)
        with ws.lock(), Registry(ws) as registry:
            run_id = registry.start_run(command)
            try:
                result = run_cycle(ws, registry, spec, logs, day=day, force=force)
            except BaseException as error:
                registry.finish_run(run_id, "failed", {"error": str(error)})
                raise
            registry.finish_run(run_id, result.outcome, result.to_dict())
        write_report(ws)
        return result

    result = run_stage(action)
    if as_json:
        emit_json(result.to_dict())
    else:
        out.print(_cycle_summary(result))
    if result.outcome == "rejected":
        raise typer.Exit(EXIT_GATE_REFUSED)


def _cycle_summary(result) -> str:
    if result.outcome == "dry-run":
        return (
            f"dry run for {result.day}: "
            + "; ".join(result.plan)
            + ("\n  " + "\n  ".join(result.new_files) if result.new_files else "")
        )
    if result.outcome == "nothing-new":
        return (
            f"nothing new: {result.day} already has v{result.candidate}; "
            f"live is v{result.live_after}"
        )
    gate = result.gate or {}
    cand = gate.get("candidate", {})
    text = (
        f"{result.day}: candidate v{result.candidate} holdout AUC {fmt(cand.get('auc'))} "
        f"Logloss {fmt(cand.get('logloss'))}"
    )
    if gate.get("live"):
        text += (
            f" vs live v{result.live_before} AUC {fmt(gate['live']['auc'])} "
            f"Logloss {fmt(gate['live']['logloss'])}"
        )
    elif gate.get("first_version"):
        text += " (first version: absolute thresholds only)"
    verdict = {
        "promoted": "promoted" + (" (FORCED past the gate)" if gate.get("forced") else ""),
        "rejected": "rejected: " + "; ".join(gate.get("reasons", [])),
    }[result.outcome]
    return f"{text} -> {verdict}"


@app.command("report")
def report_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file; default reports/report.html.")
    ] = None,
) -> None:
    """Write one self-contained HTML page: per-day curves per arm, lift, calibration, versions.

    Example: reloop report --out report.html
    """
    from reloop_cli.report import write_report

    ws = Workspace(workspace)
    path = run_stage(lambda: write_report(ws, out_file))
    out.print(f"report written to {path}")


@app.command("export")
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
    from reloop_cli.export import export_version

    ws = Workspace(workspace)
    result = run_stage(lambda: export_version(ws, version, fmt, out_file))
    if as_json:
        emit_json(result.__dict__)
    else:
        out.print(f"v{version} exported as {fmt} to {result.path} (feature map {result.features})")


@app.command("status")
def status_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """The live version, the last runs, and every version with its gate metrics.

    Example: reloop status -w /srv/reloop
    """
    from reloop_cli.promotion import status
    from reloop_cli.registry import Registry

    ws = Workspace(workspace)

    def action():
        from reloop_cli.errors import BadInput

        if not ws.registry_path.exists():
            raise BadInput(f"{ws.root}: no registry yet; run `reloop run` or `reloop train` first")
        with Registry(ws) as registry:
            return status(registry, runs=runs)

    report = run_stage(action)
    if as_json:
        emit_json(report)
        return
    out.print(f"live version: {'v' + str(report['live']) if report['live'] else 'none'}")
    table = Table(
        "version",
        "day",
        "parent",
        "loss",
        "status",
        "holdout AUC",
        "holdout Logloss",
        title="versions (chain main)",
    )
    for v in report["versions"]:
        table.add_row(
            f"v{v['version']}",
            v["day"],
            f"v{v['parent']}" if v["parent"] else "-",
            v["loss"],
            v["status"],
            fmt(v["holdout_auc"]),
            fmt(v["holdout_logloss"]),
        )
    out.print(table)
    runs_table = Table("run", "started", "ended", "outcome", "command", title="recent runs")
    for r in report["runs"]:
        runs_table.add_row(
            str(r["id"]), r["started"], r["ended"] or "-", r["outcome"], r["command"]
        )
    out.print(runs_table)


@app.command("promote")
def promote_command(
    version: Annotated[int, typer.Argument(help="Version to make live.")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
) -> None:
    """Make a version live by hand, overriding the gate (recorded as a manual promotion).

    Example: reloop promote 7
    """
    from reloop_cli.promotion import promote_version
    from reloop_cli.registry import Registry

    ws = Workspace(workspace)

    def action():
        with ws.lock(), Registry(ws) as registry:
            return promote_version(registry, version)

    previous = run_stage(action)
    out.print(
        f"v{version} is live (was {'v' + str(previous) if previous else 'none'}); "
        "recorded as a manual promotion"
    )


@app.command("rollback")
def rollback_command(workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE)) -> None:
    """Put back the version that was live before the current one (recorded as a rollback).

    Example: reloop rollback
    """
    from reloop_cli.promotion import rollback
    from reloop_cli.registry import Registry

    ws = Workspace(workspace)

    def action():
        with ws.lock(), Registry(ws) as registry:
            return rollback(registry)

    current, target = run_stage(action)
    out.print(f"rolled back: v{target} is live again (v{current} marked rejected)")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
