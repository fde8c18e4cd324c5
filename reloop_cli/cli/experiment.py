"""`reloop experiment`: start a candidate beside live by hand (or an A/A test of the split), stop
the running one, and read every experiment's nightly looks. The nightly run (`reloop run
--from-server`) judges the running experiment and starts one itself under
`experiment.mode = "canary"`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reloop_cli.cli.common import (
    JsonOpt,
    SpecOpt,
    WorkspaceOpt,
    app,
    emit_json,
    err,
    out,
    run_stage,
)
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

experiment_app = typer.Typer(
    help="Online experiments: canary, shadow and A/A arms in `reloop serve`, judged nightly.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment", rich_help_panel="In production")

SharesOpt = Annotated[
    str | None,
    typer.Option(
        "--shares", help="The candidate's traffic shares, stage by stage: 0.05,0.5 (spec's)."
    ),
]


def _shares(text: str | None) -> tuple[float, ...] | None:
    from reloop_cli.errors import BadInput

    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise BadInput(f"--shares {text!r}: numbers separated by commas, as 0.05,0.5") from None


def _start(workspace: Path, spec_path, version: int | None, shares, shadow, as_json) -> None:
    from reloop_cli.columns import MAIN_CHAIN
    from reloop_cli.operations.experiment import start_experiment
    from reloop_cli.store.registry import Registry
    from reloop_cli.store.stored_spec import spec_for

    ws = Workspace(workspace)

    def action():
        Registry.require(ws)
        spec = spec_for(ws, spec_path)
        with ws.lock(), Registry(ws) as registry:
            target = registry.live(MAIN_CHAIN) if version is None else version
            if target is None:
                from reloop_cli.errors import BadInput

                raise BadInput("experiment: nothing is live yet")
            return start_experiment(
                ws, registry, spec, target, shares=_shares(shares), shadow_nights=shadow
            )

    started = run_stage(action)
    if version is not None and started.mode == "aa":  # said loudly: it decides nothing
        err.print(
            f"warning: v{version} is the live version, so experiment {started.id} is an A/A "
            "test of the split (it never promotes or rolls back); to test a candidate, name "
            "another version (`reloop status` lists them)"
        )
    if as_json:
        emit_json(started.to_dict())
        return
    out.print(
        f"experiment {started.id}: v{started.candidate} against live v{started.live}, "
        f"{started.mode} at {started.share:.1%}; `reloop run --from-server` judges it nightly"
    )


@experiment_app.command("start")
def start_command(
    version: Annotated[int, typer.Argument(help="The candidate version.")],
    shares: SharesOpt = None,
    shadow_nights: Annotated[
        int | None, typer.Option(help="Nights of shadow scoring first (spec's).")
    ] = None,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a version beside live as an experiment's candidate.

    Example: reloop experiment start 9 --shares 0.05,0.5
    """
    _start(workspace, spec_path, version, shares, shadow_nights, as_json)


@experiment_app.command("aa")
def aa_command(
    share: Annotated[float, typer.Option(help="The second arm's share of units.")] = 0.5,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An A/A experiment: the live version against itself, to check the split and the logging.

    Example: reloop experiment aa --share 0.5
    """
    _start(workspace, spec_path, None, str(share), 0, as_json)


@experiment_app.command("stop")
def stop_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    as_json: JsonOpt = False,
) -> None:
    """End the running experiment: the candidate is withdrawn, live serves everyone.

    Example: reloop experiment stop
    """
    from reloop_cli.operations.experiment import stop_experiment
    from reloop_cli.store.registry import Registry

    ws = Workspace(workspace)

    def action():
        Registry.require(ws)
        with ws.lock(), Registry(ws) as registry:
            return stop_experiment(ws, registry, "stopped by hand (reloop experiment stop)")

    stopped = run_stage(action)
    if as_json:
        emit_json(stopped.to_dict() if stopped else None)
        return
    out.print(f"experiment {stopped.id} stopped" if stopped else "no experiment is running")


@experiment_app.command("status")
def status_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    limit: Annotated[int, typer.Option(help="How many recent experiments.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """The newest experiments, each night's lift with its confidence sequence and decision.

    Example: reloop experiment status --json
    """
    from reloop_cli.operations.experiment import experiments_status
    from reloop_cli.store.registry import Registry

    ws = Workspace(workspace)

    def action():
        Registry.require(ws)
        with Registry(ws) as registry:
            return experiments_status(registry, limit)

    found = run_stage(action)
    if as_json:
        emit_json(found)
        return
    if not found:
        out.print("no experiments yet")
    for entry in found:
        out.print(experiment_table(entry))


def experiment_table(entry: dict) -> Table:
    """One experiment's looks as a table (also printed by `reloop status`)."""
    table = Table(
        "night",
        "stage",
        "units live / cand.",
        "CTR live",
        "CTR cand.",
        "lift [sequence]",
        "SRM p",
        "decision",
        title=(
            f"experiment {entry['id']}: v{entry['candidate']} vs v{entry['live']} "
            f"({entry['mode']}, {entry['status']})"
        ),
    )
    for look in entry["looks_taken"]:
        found = look["evidence"]
        arms, lift, split = found.get("arms"), found.get("lift"), found.get("sample_ratio")
        table.add_row(
            str(look["look"]),
            str(look["stage"]),
            f"{arms['live']['units']:,} / {arms['candidate']['units']:,}" if arms else "-",
            _rate(arms and arms["live"]["ctr"]),
            _rate(arms and arms["candidate"]["ctr"]),
            (
                f"{lift['value']:+.2%} [{lift['sequence_low']:+.2%}, {lift['sequence_high']:+.2%}]"
                if lift
                else "-"
            ),
            f"{split['p_value']:.3g}" if split and split["p_value"] is not None else "-",
            look["decision"],
        )
    return table


def _rate(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"
