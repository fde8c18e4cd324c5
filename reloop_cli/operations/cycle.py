"""`reloop run`: one scheduled retraining cycle, safe to run unattended.

ingest what arrived -> the live version serves (scores) the newest day -> train a candidate on the
window, keeping a seeded holdout slice of the newest day out -> judge candidate vs live on that
slice -> promote only through the gate. Every step is idempotent, so a cycle killed anywhere is
finished by the next one: a version already trained for the day is judged, not trained again.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from enum import Enum

import polars as pl

from reloop_cli.columns import DAY, MAIN_CHAIN, REJECT_REASON, SERVED_PCTR
from reloop_cli.data import column_types
from reloop_cli.data.ingest import IngestResult, ingest, load_files
from reloop_cli.data.inputs import InputFile, discover
from reloop_cli.data.manifest import is_ingested
from reloop_cli.errors import BadInput
from reloop_cli.features.novelty import jumps, novelty
from reloop_cli.operations.deploy import publish_live
from reloop_cli.operations.experiment import start_experiment
from reloop_cli.operations.gate import GateOutcome, GateVerdict, holdout_expr, run_gate
from reloop_cli.runtime.faults import crash_point
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.registry import Registry, VersionStatus
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import Lineage, train_version
from reloop_cli.versions.score import score_day

log = logging.getLogger("reloop")


class CycleOutcome(str, Enum):
    """How a cycle ended; `reloop run` exits 4 on REJECTED and 5 on INCONCLUSIVE."""

    PROMOTED = "promoted"
    REJECTED = "rejected"  # the gate refused the candidate; live keeps serving
    INCONCLUSIVE = "inconclusive"  # too few holdout clicks to judge; live keeps serving
    NOTHING_NEW = "nothing-new"
    # passed the gate and published beside live for an online experiment (experiment.mode),
    # or a night of an experiment that runs: live keeps serving most traffic
    EXPERIMENT = "experiment"
    DRY_RUN = "dry-run"

    __str__ = str.__str__  # the value, in f-strings and JSON alike


@dataclass
class CycleResult:
    """What a cycle did (or, with --dry-run, would do)."""

    outcome: CycleOutcome
    day: str | None = None
    new_files: list[str] = field(default_factory=list)
    ingested_rows: int = 0
    rejected_rows: int = 0
    live_before: int | None = None
    candidate: int | None = None
    live_after: int | None = None
    gate: GateVerdict | None = None
    started: str | None = None  # how the candidate's weights began (warm start, or why not)
    published: dict | None = None  # the release this run published for serving, if any
    join: dict | None = None  # `--from-server`: what the click join labelled and held back
    forced: bool = False
    plan: list[str] = field(default_factory=list)
    late_rows: dict[str, int] = field(default_factory=dict)  # rows added to days held already
    late_policy: str = "append"
    duplicates: dict[str, int] = field(default_factory=dict)  # impressions held already, skipped
    relabelled: dict[str, int] = field(default_factory=dict)  # of those, arriving with new labels
    # per field: the share of the day's values no earlier day of the window held, and the day
    # before's; `novelty_warnings` says where it jumped
    new_values: dict[str, dict] = field(default_factory=dict)
    novelty_warnings: list[str] = field(default_factory=list)
    # days that gained late rows after versions had trained on them: day -> those versions
    changed_trained_days: dict[str, list[int]] = field(default_factory=dict)
    update: dict | None = None  # `--incremental`: the pass on the newest hours (else None)
    # why nothing was trained although rows are held (`--from-server`: no day complete yet)
    waiting: str | None = None
    quarantined: list[dict] = field(default_factory=list)  # files set aside this run
    experiment: dict | None = None  # tonight's look at the experiment that ran (--from-server)
    experiment_started: dict | None = None  # the experiment this run's candidate started
    sources: list[InputFile] = field(default_factory=list, repr=False)  # the new files, to ingest

    def to_dict(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del fields["sources"]
        fields["outcome"] = self.outcome.value
        fields["gate"] = self.gate.to_dict() if self.gate else None
        return copy.deepcopy(fields)


def _version_for(registry: Registry, day: str) -> dict | None:
    """The main chain's newest version trained on its window for `day`, if any (an incremental
    update of the day's newest hours is not the day's version: the nightly cycle still trains)."""
    matches = [
        v
        for v in registry.versions(MAIN_CHAIN)
        if v["day"] == day and v["meta"].get("update") is None
    ]
    return matches[-1] if matches else None


def plan_cycle(
    ws: Workspace,
    spec: Spec,
    logs: str,
    day: str | None,
    describe: bool = True,
    read_new: bool = True,
) -> CycleResult:
    """What a cycle would do; reads, validates the new files, writes nothing. `describe` adds
    the training and promotion steps to the plan (for --dry-run). Without `read_new` the new
    files are only listed, not read: the cycle then takes its day from the workspace after
    ingesting them (`result.day` is None until then), so each file is validated once."""
    if not spec.data.time_column:
        raise BadInput(f"{spec.source}: `reloop run` needs data.time_column to date new logs")
    files = discover(logs)
    new = [f for f in files if not is_ingested(ws, spec, f)]
    if not read_new:
        result = CycleResult(outcome=CycleOutcome.DRY_RUN, new_files=[str(f.path) for f in new])
        result.sources = list(new)
        return result
    days, forms = set(ws.days()), column_types.load(ws)
    for source in new:  # one file at a time: a backlog of days never sits in memory at once
        batch = load_files([source], spec, None, spec.data.start_date, forms=forms)
        days |= set(batch.filter(pl.col(REJECT_REASON).is_null())[DAY].unique())
    if day is not None and day not in days:
        raise BadInput(
            f"day {day}: no logs for that day (have {min(days, default='none')}.."
            f"{max(days, default='none')})"
        )
    target = day or max(days, default=None)
    if target is None:
        raise BadInput(f"{logs}: no rows to train on")
    result = CycleResult(
        outcome=CycleOutcome.DRY_RUN, day=target, new_files=[str(f.path) for f in new]
    )
    result.sources = list(new)
    result.plan.append(f"ingest {len(new)} new file(s)" if new else "no new files")
    if describe:
        result.plan += _plan_training(ws, spec, target, sorted(days))
    return result


def _plan_training(ws: Workspace, spec: Spec, target: str, days: list[str]) -> list[str]:
    """The rest of the plan, read from a snapshot of the registry (never created here)."""
    versions, live = Registry.snapshot(ws, MAIN_CHAIN)
    existing = [v for v in versions if v["day"] == target]
    if existing and existing[-1]["status"] != VersionStatus.CANDIDATE:
        return [
            f"{target} already has v{existing[-1]['version']} "
            f"({existing[-1]['status']}): nothing to train"
        ]
    window = [d for d in days if d <= target][-spec.train.window_days :]
    steps = []
    if live is not None:
        steps.append(f"live v{live} serves {target} (its scores become ỹ_last)")
    loss = spec.train.loss if live is not None else "bce"
    if existing:
        steps.append(f"judge the undecided candidate v{existing[-1]['version']}")
    else:
        steps.append(
            f"train a candidate ({loss}, parent {f'v{live}' if live else 'none'}) on "
            f"{window[0]}..{window[-1]}, holding out "
            f"{spec.gate.holdout_fraction:.0%} of {target}"
        )
    steps.append(
        "promote it if the gate passes"
        + (" (first version: absolute thresholds only)" if live is None else f" against v{live}")
    )
    return steps


def run_cycle(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    logs: str,
    *,
    day: str | None = None,
    force: bool = False,
    last_day: str | None = None,
    online: bool = False,
) -> CycleResult:
    """One cycle; call under the workspace lock. Without `day` it trains the newest day held,
    or with `last_day` the newest held on or before it (newer days are ingested, not trained).
    `online` (a server logs the traffic): a candidate that passes the gate under
    `experiment.mode = "canary"` starts an experiment instead of going live."""
    # A backfill (`day` given) checks the day against the new files before writing anything;
    # the nightly cycle trains on the newest day, known once the new files are ingested.
    result = plan_cycle(ws, spec, logs, day, describe=False, read_new=day is not None)
    result.outcome, result.forced = CycleOutcome.NOTHING_NEW, force
    if result.new_files:
        ingest_new(ws, registry, spec, result)
    if result.day is None:
        held = ws.days()
        if not held:
            raise BadInput(f"{logs}: no rows to train on")
        complete = [d for d in held if last_day is None or d <= last_day]
        if not complete:
            result.live_after = registry.live(MAIN_CHAIN)
            return result
        result.day = complete[-1]
    target = result.day
    live = result.live_before = registry.live(MAIN_CHAIN)
    existing = _version_for(registry, target)
    if existing is not None and existing["status"] != VersionStatus.CANDIDATE:
        log.info(
            "a version for %s exists already (v%d, %s): nothing new",
            target,
            existing["version"],
            existing["status"],
        )
        result.live_after, result.candidate = live, existing["version"]
        deployed = publish_live(ws, registry)  # a run killed after promoting: publish it now
        result.published = deployed.to_dict() if deployed else None
        return result
    _report_novelty(ws, spec, target, result)
    if live is not None and SERVED_PCTR not in ws.scan_logs([target]).collect_schema().names():
        score_day(ws, live, target)  # what serving would have logged: tomorrow's ỹ_last
        registry.record_served(MAIN_CHAIN, target, live)
        log.info("live v%d scored %s", live, target)
    if existing is None:
        trained = train_version(
            ws,
            registry,
            spec,
            target,
            Lineage(MAIN_CHAIN, parent=live, promote=False),
            exclude=holdout_expr(spec, target),
        )
        candidate = trained.version
        if trained.started.mode != "none":  # the spec asks for a warm start: say how it went
            result.started = trained.started.describe()
        log.info(
            "trained candidate v%d (%s, parent %s, %s) on %s..%s",
            candidate,
            trained.loss,
            live,
            trained.started.describe(),
            trained.window[0],
            trained.window[-1],
        )
    else:
        candidate = existing["version"]
        log.info("judging candidate v%d left undecided by an earlier run", candidate)
    result.candidate = candidate
    judge(ws, registry, spec, result, live, force, online)
    return result


def judge(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    result: CycleResult,
    live: int | None,
    force,
    online: bool = False,
) -> None:
    """The gate on `result.candidate` against `live` on `result.day`'s holdout; promote through
    it (or expose it to an experiment), or record why not; publish what is live."""
    candidate, target = result.candidate, result.day
    result.gate = run_gate(ws, registry, spec, candidate, live, target, force)
    crash_point("promote")
    verdict = result.gate
    experiments = online and spec.experiment.mode == "canary" and live is not None
    if verdict.passed and not verdict.forced and experiments:
        registry.decide(candidate, VersionStatus.CANDIDATE, {"gate": verdict.to_dict()})
        started = start_experiment(ws, registry, spec, candidate)
        result.experiment_started = started.to_dict()
        result.outcome = CycleOutcome.EXPERIMENT
        log.info("v%d passed the gate: experiment %s", candidate, started.id)
    elif verdict.passed or verdict.forced:  # not even --force promotes a NaN pCTR
        reason = "forced" if verdict.forced else "gate"
        registry.promote(MAIN_CHAIN, candidate, reason, verdict.to_dict())
        result.outcome = CycleOutcome.PROMOTED
        log.info("v%d promoted (%s)", candidate, reason)
    elif verdict.outcome == GateOutcome.INCONCLUSIVE:
        registry.decide(candidate, VersionStatus.INCONCLUSIVE, verdict.to_dict())
        result.outcome = CycleOutcome.INCONCLUSIVE
        log.warning("v%d not judged: %s", candidate, "; ".join(verdict.reasons))
    else:
        registry.decide(candidate, VersionStatus.REJECTED, verdict.to_dict())
        result.outcome = CycleOutcome.REJECTED
        log.warning("v%d rejected: %s", candidate, "; ".join(verdict.reasons))
    result.live_after = registry.live(MAIN_CHAIN)
    deployed = publish_live(ws, registry)  # also what an earlier run left unpublished
    result.published = deployed.to_dict() if deployed else None


def ingest_new(ws: Workspace, registry: Registry, spec: Spec, result: CycleResult) -> None:
    """Ingest the cycle's new files and say what they held: late rows, duplicates."""
    ingested: IngestResult = ingest(ws, spec, result.sources)
    result.ingested_rows, result.rejected_rows = ingested.rows, ingested.rejected
    log.info(
        "ingested %d rows (%d rejected) from %d file(s)",
        ingested.rows,
        ingested.rejected,
        len(result.new_files),
    )
    _report_late_rows(registry, ingested, result)
    result.duplicates, result.relabelled = ingested.duplicates, ingested.relabelled
    for dup_day, rows in sorted(ingested.duplicates.items()):
        log.warning(
            "%d impression(s) of %s held already, skipped (%d with another label)",
            rows,
            dup_day,
            ingested.relabelled.get(dup_day, 0),
        )


def _report_novelty(ws: Workspace, spec: Spec, day: str, result: CycleResult) -> None:
    """Per field, the share of the day's values no earlier day held; a warning where it jumped."""
    shares = novelty(ws, spec, day)
    result.new_values = {name: entry.to_dict() for name, entry in shares.items()}
    result.novelty_warnings = jumps(shares)
    for warning in result.novelty_warnings:
        log.warning("new values on %s: %s", day, warning)


def _report_late_rows(registry: Registry, ingested: IngestResult, result: CycleResult) -> None:
    """Say which days gained late rows after versions had trained on them; history is never
    retrained by itself (a backfill is `reloop run --day D`)."""
    result.late_rows, result.late_policy = ingested.late_rows, ingested.late_policy
    if not ingested.late_rows:
        return
    trained: dict[str, list[int]] = {}
    for version in registry.versions(MAIN_CHAIN):
        for window_day in version["meta"].get("window", []):
            trained.setdefault(window_day, []).append(version["version"])
    action = "appended to" if ingested.late_policy == "append" else "rejected for"
    for late_day, rows in sorted(ingested.late_rows.items()):
        versions = trained.get(late_day, [])
        if versions and ingested.late_policy == "append":
            result.changed_trained_days[late_day] = versions
        log.warning(
            "%d late row(s) %s %s%s",
            rows,
            action,
            late_day,
            f", a day already trained on by v{', v'.join(map(str, versions))}; not retrained"
            if versions and ingested.late_policy == "append"
            else "",
        )
