"""`reloop run --incremental 6h`: between two nightly cycles, a warm-started pass over the newest
hours, gated like any candidate, for teams that retrain more often than nightly.

When new files have arrived: ingest them; the newest day's rows shown in the last `hours` before
its newest row (cut at the day's midnight: one day, the window of this pass), less the gate's
seeded holdout slice, train one epoch of BCE from the live version's weights (IncCTR's update:
no ỹ_last, since the day's scores by the live version are the nightly cycle's to write); the
gate judges it against the live version on the day's holdout, which neither trained on; a pass
promotes it and publishes it for `reloop serve`. The version's meta keeps {"kind":
"incremental", "since", "hours"}; the nightly cycle for the day still trains the day's version
(an incremental update is not it). No new files: nothing to do.
"""

from __future__ import annotations

import logging

import polars as pl

from reloop_cli.columns import MAIN_CHAIN, TS
from reloop_cli.errors import BadInput
from reloop_cli.operations.cycle import CycleOutcome, CycleResult, ingest_new, judge, plan_cycle
from reloop_cli.operations.gate import holdout_expr
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import Lineage, train_version

log = logging.getLogger("reloop")


def incremental_spec(spec: Spec) -> Spec:
    """One warm-started epoch of BCE on one day's rows."""
    return spec.override("train", loss="bce", epochs=1, window_days=1, warm_start=True)


def run_incremental(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    logs: str,
    seconds: float,
    *,
    force: bool = False,
) -> CycleResult:
    """One incremental update; call under the workspace lock."""
    if seconds <= 0:
        raise BadInput("--incremental: the newest hours must be longer than 0s")
    live = registry.live(MAIN_CHAIN)
    if live is None:
        raise BadInput(
            "--incremental: no live version to start from; run a nightly cycle first "
            "(reloop run without --incremental)"
        )
    result = plan_cycle(ws, spec, logs, None, describe=False, read_new=False)
    result.outcome, result.forced, result.live_before = CycleOutcome.NOTHING_NEW, force, live
    if not result.new_files:
        result.live_after = live
        return result
    ingest_new(ws, registry, spec, result)
    target = result.day = ws.days()[-1]
    newest = ws.scan_logs([target]).select(pl.col(TS).max()).collect().item()
    since = float(newest) - seconds
    update = {"kind": "incremental", "since": since, "hours": seconds / 3_600, "parent": live}
    exclude = holdout_expr(spec, target) | (pl.col(TS) < since)
    rows = ws.scan_logs([target]).filter(~exclude).select(pl.len()).collect().item()
    if rows < spec.train.batch_size:  # too little to learn from: nothing trained or published
        result.live_after = live
        result.waiting = (
            f"--incremental: the newest {seconds / 3_600:g} h of {target} hold {rows:,} rows to "
            f"train on, fewer than one batch (train.batch_size {spec.train.batch_size:,}); "
            "nothing trained"
        )
        log.info("%s", result.waiting)
        return result
    trained = train_version(
        ws,
        registry,
        incremental_spec(spec),
        target,
        Lineage(MAIN_CHAIN, parent=live, promote=False, update=update),
        exclude=exclude,
    )
    result.candidate, result.update = trained.version, {**update, "rows": trained.rows}
    result.started = trained.started.describe()
    log.info(
        "incremental candidate v%d: one epoch on %d rows of %s shown in its last %.1f h, from v%d",
        trained.version,
        trained.rows,
        target,
        seconds / 3_600,
        live,
    )
    judge(ws, registry, spec, result, live, force)
    return result
