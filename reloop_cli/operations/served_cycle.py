"""`reloop run --from-server`: the nightly cycle on what `reloop serve` logged.

First the click join labels every impression whose attribution window has closed (`serving/
clickjoin.py`; the rest wait for the next run), quarantining any damaged log file; a joined file
that ingest would refuse is quarantined too, so no file stops a night twice. Then the cycle runs
as on any logs: the labelled files are ingested (with the served pCTR as ỹ_last and duplicates
skipped by impression id), and a candidate trains on the newest *complete* day: one all of whose
impressions' windows have closed by `as_of`. A run at 02:15 while the server keeps serving
trains yesterday, and ingests today's first hours without training on them; the next night
trains today. The gate judges the candidate, and a promotion is published for the server.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.data import column_types
from reloop_cli.data.ingest import load_files
from reloop_cli.data.inputs import discover
from reloop_cli.data.manifest import is_ingested
from reloop_cli.errors import BadInput
from reloop_cli.operations.cycle import (
    CycleOutcome,
    CycleResult,
    ingest_new,
    plan_cycle,
    run_cycle,
)
from reloop_cli.operations.experiment import judge_experiment
from reloop_cli.operations.incremental import run_incremental
from reloop_cli.serving.clickjoin import (
    JoinResult,
    completes_at,
    join_clicks,
    last_complete_day,
    served_spec,
)
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.quarantine import Quarantined, quarantine
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace

log = logging.getLogger("reloop")


def run_server_cycle(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    log_dir: Path | None = None,
    *,
    as_of: float | None = None,
    day: str | None = None,
    force: bool = False,
    incremental_seconds: float | None = None,
) -> CycleResult:
    """Join the server's clicks onto its impressions, then one cycle on the labelled rows;
    call under the workspace lock. `as_of` (epoch seconds, default now) decides which
    attribution windows have closed. A `log_dir` given must exist; the workspace's own
    (`serving/logs/`) may not yet, before the server's first write."""
    if log_dir is not None and not log_dir.is_dir():
        what = "is a file" if log_dir.exists() else "does not exist"
        raise BadInput(f"--log-dir {log_dir}: {what}; give the folder `reloop serve` logs to")
    folder = log_dir or ws.serving_logs
    as_of = time.time() if as_of is None else as_of
    joined = join_clicks(ws, spec, folder, as_of) if folder.is_dir() else JoinResult()
    log.info("%s", joined.summary())
    served = served_spec(spec)
    refused = set_aside_refused(ws, served)
    for record in [*map(_as_record, joined.quarantined), *refused]:
        log.warning("quarantined %s", record.line())
    tonight = judge_experiment(ws, registry, served, as_of)
    if tonight is not None and tonight["experiment"]["status"] == "running":
        result = _ingest_only(ws, registry, served, tonight)
    elif not any(ws.joined.glob("*.parquet")):
        result = CycleResult(outcome=CycleOutcome.NOTHING_NEW, live_after=registry.live(MAIN_CHAIN))
        if joined.held_back:
            newest = max(joined.held_back_days)
            result.waiting = (
                f"{joined.held_back:,} impression(s) wait for their attribution windows to close; "
                f"their day {newest} is trained the first run after {completes_at(spec, newest)}"
            )
    elif incremental_seconds is not None:  # a pass on the newest hours of what was joined
        result = run_incremental(
            ws, registry, served, str(ws.joined), incremental_seconds, force=force
        )
    else:
        complete = last_complete_day(spec, as_of, joined.held_back_days)
        result = run_cycle(
            ws,
            registry,
            served,
            str(ws.joined),
            day=day,
            force=force,
            last_day=complete,
            online=True,
        )
        newest = max(ws.days(), default=None)
        if newest is not None and (result.day is None or newest > result.day):
            result.waiting = (
                f"{newest} is still open until {completes_at(spec, newest)} (its last "
                "attribution windows close then); it is trained the first run after"
            )
    result.experiment = tonight
    result.join = joined.to_dict()
    result.quarantined = [*joined.quarantined, *(r.to_dict() for r in refused)]
    return result


def _ingest_only(ws: Workspace, registry: Registry, spec: Spec, tonight: dict) -> CycleResult:
    """A night while an experiment runs: what was joined is ingested, no rival is trained."""
    result = plan_cycle(ws, spec, str(ws.joined), None, describe=False, read_new=False)
    result.outcome = CycleOutcome.EXPERIMENT
    if result.new_files:
        ingest_new(ws, registry, spec, result)
    result.live_after = registry.live(MAIN_CHAIN)
    running = tonight["experiment"]
    result.candidate = running["candidate"]
    result.waiting = (
        f"experiment {running['id']} runs (v{running['candidate']} at "
        f"{running['share']:.1%}): no new candidate is trained until it ends"
    )
    return result


def _as_record(fields: dict) -> Quarantined:
    return Quarantined(**fields)


def set_aside_refused(ws: Workspace, spec: Spec) -> list[Quarantined]:
    """Quarantine each joined file not yet ingested that ingest would refuse (its first bad
    row named), so that the night ingests the rest and no later night meets it again."""
    if not any(ws.joined.glob("*.parquet")):
        return []
    forms = column_types.load(ws)
    refused = []
    for source in discover(str(ws.joined)):
        if is_ingested(ws, spec, source):
            continue
        try:
            load_files([source], spec, None, spec.data.start_date, forms=dict(forms))
        except BadInput as error:
            refused.append(quarantine(ws, "joined", source.path, str(error), source.path.name))
    return refused
