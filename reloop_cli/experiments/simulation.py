"""`reloop simulate`: which loop runs, on which data, and what is kept of it.

The command's request says it all: the open loop (one run, or repeats over training seeds and
simulated worlds) or the closed loop (each arm's model serves its own users), the data (files to
ingest, the workspace's days, or the bundled sample when the workspace is empty), and the spec
overrides. The result is saved where `reloop report` finds it and the report is rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from reloop_cli.evaluation.policies import Policy
from reloop_cli.experiments.closed_loop import ClosedLoopConfig, run_closed_loop
from reloop_cli.experiments.online import ClosedLoopResult, across_worlds
from reloop_cli.experiments.online_policy import PolicyResult, run_online_policy, summarize
from reloop_cli.experiments.over_http import OverHttpConfig, OverHttpResult, run_over_http
from reloop_cli.experiments.repeats import RepeatsResult, simulate_repeats
from reloop_cli.experiments.simulate import SimulateResult, parse_arms, simulate
from reloop_cli.operations.report import (
    save_closed_loop,
    save_over_http,
    save_simulation,
    write_report,
)
from reloop_cli.operations.tracking import track_simulation
from reloop_cli.runtime.resources import bundled, sample_files
from reloop_cli.spec.pipeline import Spec, load_spec
from reloop_cli.store.registry import Registry
from reloop_cli.store.stored_spec import spec_for
from reloop_cli.store.workspace import Workspace

SAMPLE_SPEC = "pipelines/sample.toml"


@dataclass(frozen=True)
class ClosedLoopSettings:
    """How the closed loop serves: the traffic of a day and the serving policy."""

    mode: str = "paired"
    requests: int = 6_000
    candidates: int = 20
    policy: Policy = field(default_factory=Policy)
    over_http: bool = False  # one arm, served by a `reloop serve` process (`over_http.py`)
    intraday_trend: float = 0.0  # the worlds drift within each day (synth's --intraday-*)
    intraday_base_shift: float = 0.0
    label_delay_seconds: float = 3_600.0  # an adapted arm's labels arrive this late
    users: int = 300  # each world's users
    # over HTTP: the spec's [experiment] promotes (`online_policy.py`), each candidate set
    # against the world's truth
    online_policy: bool = False


@dataclass(frozen=True)
class SimulationRequest:
    """What `reloop simulate` was asked to run."""

    days: int = 7
    arms: str = "bce,kd,reloop"  # comma-separated losses
    seeds: int = 1  # training seeds spec seed, +1, ...
    world_seeds: int | None = None  # simulated worlds 0..N-1 (0 is the bundled sample)
    world_rows: int = 30_000
    files: tuple[Path, ...] = ()  # raw logs to ingest first
    spec_file: Path | None = None  # default: the spec the workspace was ingested with
    ingest_days: int | None = None  # pseudo-days for files without a time column
    alpha: float | None = None
    model: str | None = None
    device: str | None = None
    mlflow: str | None = None  # also track the runs in MLflow at this URI
    closed_loop: ClosedLoopSettings | None = None  # None: the open loop


@dataclass
class SimulationOutcome:
    """The result (one run, repeats, or closed-loop worlds) and the report written from it."""

    result: (
        SimulateResult
        | RepeatsResult
        | list[ClosedLoopResult]
        | list[OverHttpResult]
        | list[PolicyResult]
    )
    payload: dict  # what was saved for the report, as JSON
    report: Path


def run_simulation(
    ws: Workspace, request: SimulationRequest, on_step: Callable[[str], None] = lambda _: None
) -> SimulationOutcome:
    """Run what `request` asks for under the workspace lock, save it and write the report."""
    if request.closed_loop is not None:  # its arms may carry an adapter: bce+reloop2
        arms = list(dict.fromkeys(a.strip() for a in request.arms.split(",") if a.strip()))
        return _closed_loop(ws, request, arms, on_step)
    arms = parse_arms(request.arms)
    if request.world_seeds is not None and (request.files or request.world_seeds < 1):
        raise BadInput("world_seeds: 1 or more simulated worlds, and no log files (it makes them)")
    with ws.lock():
        spec = _open_loop_spec(ws, request, on_step)
        if request.seeds > 1 or request.world_seeds is not None:
            worlds = list(range(request.world_seeds)) if request.world_seeds is not None else None
            result = simulate_repeats(
                ws, spec, request.days, arms, request.seeds, worlds, request.world_rows, on_step
            )
        else:
            with Registry(ws) as registry:
                result = simulate(ws, registry, spec, request.days, arms, on_step=on_step)
        payload = result.to_dict()
        save_simulation(ws, payload)
        report = write_report(ws)
        if request.mlflow:
            for repeat in getattr(result, "repeats", [result]):
                track_simulation(request.mlflow, ws, spec, repeat)
    return SimulationOutcome(result, payload, report)


def _open_loop_spec(ws: Workspace, request: SimulationRequest, on_step) -> Spec:
    """Ingest what the loop needs (the files given, or the bundled sample into an empty
    workspace) and return the spec with the request's overrides."""
    inputs, spec_file = list(request.files), request.spec_file
    if request.world_seeds is not None:
        spec_file = spec_file or bundled(SAMPLE_SPEC)
    elif not inputs and not ws.days():
        inputs, spec_file = sample_files(), spec_file or bundled(SAMPLE_SPEC)
    if inputs:
        if spec_file is None:
            raise BadInput("simulate: log files to ingest need a spec that says how to read them")
        on_step(f"ingesting {len(inputs)} file(s) into {ws.root}")
        ingest(ws, load_spec(spec_file), inputs, days=request.ingest_days)
    base = load_spec(spec_file) if request.world_seeds is not None else spec_for(ws, spec_file)
    return _overridden(base, request)


def _overridden(spec: Spec, request: SimulationRequest) -> Spec:
    spec = spec.override("train", alpha=request.alpha, device=request.device)
    return spec.override("model", name=request.model)


def _closed_loop(
    ws: Workspace, request: SimulationRequest, arms: list[str], on_step
) -> SimulationOutcome:
    """The closed loop in each simulated world (worlds 0..N-1; synth's worlds, no files)."""
    if request.files or request.seeds != 1:
        raise BadInput(
            "closed loop: it makes its own worlds, so no log files and one seed "
            "(repeat it over world_seeds)"
        )
    settings = request.closed_loop
    spec = _overridden(load_spec(request.spec_file or bundled(SAMPLE_SPEC)), request)
    if settings.over_http and (len(arms) != 1 or settings.mode != "paired" or "+" in arms[0]):
        raise BadInput(
            "over_http: one arm without an adapter (--arms reloop), paired with its in-process loop"
        )
    if settings.online_policy and not settings.over_http:
        raise BadInput("online_policy: runs with real processes; add --over-http")
    results = []
    with ws.lock():
        for world in range(request.world_seeds or 1):
            config = ClosedLoopConfig(
                days=request.days,
                requests=settings.requests,
                candidates=settings.candidates,
                policy=settings.policy,
                mode=settings.mode,
                world=world,
                intraday_trend=settings.intraday_trend,
                intraday_base_shift=settings.intraday_base_shift,
                label_delay_seconds=settings.label_delay_seconds,
                users=settings.users,
            )
            if settings.online_policy:
                over = OverHttpConfig(config, arms[0])
                results.append(run_online_policy(ws, spec, over, on_step=on_step))
                continue
            if settings.over_http:
                over = run_over_http(ws, spec, OverHttpConfig(config, arms[0]), on_step=on_step)
                results.append(over)
                continue
            results.append(run_closed_loop(ws, spec, arms, config, on_step=on_step))
        if settings.online_policy:
            payload = {"worlds": [r.to_dict() for r in results], "summary": summarize(results)}
            return SimulationOutcome(results, payload, save_over_http(ws, payload, "policy"))
        if settings.over_http:
            payload = {"worlds": [r.to_dict() for r in results]}
            return SimulationOutcome(results, payload, save_over_http(ws, payload))
        payload = {"worlds": [r.to_dict() for r in results], "summary": across_worlds(results)}
        save_closed_loop(ws, payload)
        report = write_report(ws)
    return SimulationOutcome(results, payload, report)
