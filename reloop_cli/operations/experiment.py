"""An experiment's life: a candidate published beside live, judged every night on the logged
clicks, ramped, promoted, rolled back or ended; each step recorded in the registry with the
evidence behind it (`store/experiments.py`), each published to servers through
`serving/CANDIDATE` (`serving/arms.py`).

Started by the nightly run when a candidate passes the offline gate and `experiment.mode =
"canary"`, or by hand (`reloop experiment start N`, `reloop experiment aa`). While one runs, the
nightly run ingests what the server logged but trains no rival candidate: the next one is trained
the night the experiment ends, from whichever version is live then. `reloop promote` and
`reloop rollback` overrule it (recorded as `stopped`).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.errors import BadInput
from reloop_cli.operations.deploy import (
    move_candidate,
    publish_candidate,
    publish_live,
    withdraw_candidate,
)
from reloop_cli.operations.experiment_evidence import decide, evidence, stage_rows
from reloop_cli.serving.arms import read_candidate
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.experiments import Experiment, Experiments, new_experiment_id
from reloop_cli.store.registry import Registry, VersionStatus, now_utc
from reloop_cli.store.workspace import Workspace

log = logging.getLogger("reloop")


def start_experiment(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    candidate: int,
    *,
    shares: tuple[float, ...] | None = None,
    shadow_nights: int | None = None,
) -> Experiment:
    """Publish `candidate` beside the live version and record the experiment. The candidate
    being the live version itself is an A/A experiment (at the first share)."""
    store = Experiments(registry)
    running = store.running(MAIN_CHAIN)
    if running is not None:
        raise BadInput(
            f"experiment {running.id} (v{running.candidate}) is running; "
            "`reloop experiment stop` ends it first"
        )
    live = registry.live(MAIN_CHAIN)
    if live is None:
        raise BadInput("experiment: nothing is live yet to test a candidate against")
    if registry.version_meta(candidate) is None:
        raise BadInput(f"experiment: version {candidate} does not exist")
    settings = dataclasses.replace(
        spec.experiment,
        shares=shares if shares is not None else spec.experiment.shares,
        shadow_nights=spec.experiment.shadow_nights if shadow_nights is None else shadow_nights,
    )
    settings.validate()
    aa = candidate == live
    shadow = settings.shadow_nights > 0 and not aa
    experiment = Experiment(
        id=new_experiment_id(candidate),
        chain=MAIN_CHAIN,
        candidate=candidate,
        live=live,
        mode="aa" if aa else "shadow" if shadow else "canary",
        stage=0 if shadow else 1,
        share=1.0 if shadow else settings.shares[0],
        stage_looks=0,
        looks=0,
        status="running",
        started=now_utc(),
        ended=None,
        settings=dataclasses.asdict(settings),
    )
    # the pointer first: a run killed between the two leaves a pointer no experiment owns,
    # which the next night withdraws (`judge_experiment`), never an experiment without arms
    publish_candidate(ws, candidate, _arm(experiment))
    store.add(experiment)
    log.info(
        "experiment %s: v%d against live v%d, %s at %.1f%%",
        experiment.id,
        candidate,
        live,
        experiment.mode,
        experiment.share * 100,
    )
    return experiment


def _arm(experiment: Experiment) -> dict:
    return {
        "experiment": experiment.id,
        "mode": experiment.mode,
        "share": experiment.share,
        "stage": experiment.stage,
    }


def judge_experiment(
    ws: Workspace, registry: Registry, spec: Spec, as_of: float | None = None
) -> dict | None:
    """Tonight's look at the running experiment, if any: its evidence, the decision and what
    was done about it (recorded, and published to servers)."""
    store = Experiments(registry)
    experiment = store.running(MAIN_CHAIN)
    if experiment is None:
        _withdraw_orphan(ws)
        return None
    settings = dataclasses.replace(spec.experiment, **_fields(experiment.settings, spec.experiment))
    experiment.looks += 1
    experiment.stage_looks += 1
    rows = stage_rows(ws.joined, spec.data.label, experiment.id, experiment.stage)
    found = evidence(rows, spec.data.label, experiment, settings)
    decision, why = decide(experiment, settings, found)
    store.record_look(experiment, time.time() if as_of is None else as_of, found, decision)
    _apply(ws, registry, store, experiment, decision, {"why": why, "evidence": found})
    log.info("experiment %s, night %d: %s (%s)", experiment.id, experiment.looks, decision, why)
    return {"experiment": experiment.to_dict(), "decision": decision, "why": why, **found}


def _withdraw_orphan(ws: Workspace) -> None:
    """No experiment runs: a candidate pointer left (by a run killed after ending, or before
    recording, an experiment) or damaged is withdrawn, so servers go back to live alone."""
    try:
        left = read_candidate(ws.serving)
    except BadInput as error:
        withdraw_candidate(ws)
        log.warning("withdrew a damaged candidate pointer: %s", error)
        return
    if left is not None:
        withdraw_candidate(ws)
        log.warning(
            "withdrew candidate v%d of %s: no experiment runs", left.version, left.experiment
        )


def _fields(recorded: dict, spec_settings) -> dict:
    names = {f.name for f in dataclasses.fields(spec_settings)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in names}


def _apply(
    ws: Workspace,
    registry: Registry,
    store: Experiments,
    experiment: Experiment,
    decision: str,
    record: dict,
) -> None:
    record = {"experiment": experiment.id, "decision": decision, **record}
    if decision == "promote":
        registry.promote(MAIN_CHAIN, experiment.candidate, "experiment", record)
        publish_live(ws, registry)  # LIVE names the candidate before CANDIDATE goes
        _end(ws, store, experiment, "promoted")
    elif decision == "rollback":
        registry.decide(experiment.candidate, VersionStatus.REJECTED, record)
        _end(ws, store, experiment, "rolled_back")
    elif decision == "inconclusive":
        if experiment.mode != "aa":
            registry.decide(experiment.candidate, VersionStatus.INCONCLUSIVE, record)
        _end(ws, store, experiment, "inconclusive")
    elif decision in ("ramp", "canary"):
        shares = experiment.settings["shares"]
        experiment.stage = experiment.stage + 1
        experiment.mode, experiment.share = "canary", float(shares[experiment.stage - 1])
        experiment.stage_looks = 0
        move_candidate(ws, _arm(experiment))
        store.update(experiment)
    else:  # continue, waiting, blocked: tonight changes nothing but the counts
        store.update(experiment)


def _end(ws: Workspace, store: Experiments, experiment: Experiment, status: str) -> None:
    experiment.status, experiment.ended = status, now_utc()
    store.update(experiment)
    withdraw_candidate(ws)


def stop_experiment(ws: Workspace, registry: Registry, why: str) -> Experiment | None:
    """End the running experiment by hand (or because a person promoted or rolled back):
    the candidate is withdrawn from servers, the live version stays; None when none ran."""
    store = Experiments(registry)
    experiment = store.running(MAIN_CHAIN)
    if experiment is None:
        _withdraw_orphan(ws)
        return None
    store.record_look(experiment, time.time(), {"stopped": why}, "stopped")
    if registry.live(MAIN_CHAIN) != experiment.candidate:  # not A/A, not promoted by hand
        registry.decide(
            experiment.candidate,
            VersionStatus.INCONCLUSIVE,
            {"experiment": experiment.id, "why": why},
        )
    _end(ws, store, experiment, "stopped")
    log.info("experiment %s stopped: %s", experiment.id, why)
    return experiment


def experiments_status(registry: Registry, limit: int = 5) -> list[dict]:
    """The newest experiments with every look (for `reloop status` and the report)."""
    store = Experiments(registry)
    return [{**e.to_dict(), "looks_taken": store.looks(e.id)} for e in store.recent(limit)]
