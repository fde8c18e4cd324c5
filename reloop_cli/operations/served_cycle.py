"""`reloop run --from-server`: the nightly cycle on what `reloop serve` logged.

First the click join labels every impression whose attribution window has closed (`serving/
clickjoin.py`; the rest wait for the next run), then the cycle runs as on any logs: the labelled
files are ingested (with the served pCTR as ỹ_last and duplicates skipped by impression id), a
candidate trains, the gate judges it, and a promotion is published for the server to pick up.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.operations.cycle import CycleOutcome, CycleResult, run_cycle
from reloop_cli.operations.incremental import run_incremental
from reloop_cli.serving.clickjoin import join_clicks, served_spec
from reloop_cli.spec.pipeline import Spec
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
    attribution windows have closed."""
    folder = log_dir or ws.serving_logs
    joined = join_clicks(ws, spec, folder, time.time() if as_of is None else as_of)
    log.info(
        "click join: %d impressions labelled (%d clicked), %d held back (window open), "
        "%d clicks for unknown impressions, %d after their window",
        joined.impressions,
        joined.clicked,
        joined.held_back,
        joined.unknown_clicks,
        joined.late_clicks,
    )
    if not any(ws.joined.glob("*.parquet")):
        result = CycleResult(outcome=CycleOutcome.NOTHING_NEW, live_after=registry.live(MAIN_CHAIN))
    elif incremental_seconds is not None:  # a pass on the newest hours of what was joined
        joined_spec = served_spec(spec)
        result = run_incremental(
            ws, registry, joined_spec, str(ws.joined), incremental_seconds, force=force
        )
    else:
        result = run_cycle(ws, registry, served_spec(spec), str(ws.joined), day=day, force=force)
    result.join = joined.to_dict()
    return result
