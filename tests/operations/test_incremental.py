"""`reloop run --incremental`: a warm-started pass over the newest hours between nightly
cycles, gated like any candidate; the nightly cycle still trains the day's version."""

from __future__ import annotations

import polars as pl
import pytest

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.errors import BadInput
from reloop_cli.features.hashing import bucket_of
from reloop_cli.operations.cycle import CycleOutcome, run_cycle
from reloop_cli.operations.incremental import run_incremental
from reloop_cli.spec.pipeline import load_spec
from reloop_cli.store.registry import Registry
from tests.helpers import write_spec

SIX_HOURS = 6 * 3_600.0


@pytest.fixture()
def morning(tmp_path, tiny_logs, ws):
    """Days 1-2 in the log folder, v1 live from the nightly cycle; day 3's morning written
    beside them (the afternoon kept back for later)."""
    spec = load_spec(write_spec(tmp_path, "incremental"))
    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in tiny_logs[:2]:
        pl.read_parquet(path).write_parquet(folder / path.name)
    with Registry(ws) as registry:
        first = run_cycle(ws, registry, spec, str(folder))
    assert first.outcome == CycleOutcome.PROMOTED
    day3 = pl.read_parquet(tiny_logs[2])
    noon = day3["ts"].min() + 12 * 3_600
    day3.filter(pl.col("ts") < noon).write_parquet(folder / "day3-morning.parquet")
    afternoon = day3.filter(pl.col("ts") >= noon)
    return spec, folder, day3.filter(pl.col("ts") < noon), afternoon


@pytest.mark.slow
def test_a_pass_over_the_newest_hours_is_gated_and_the_night_still_trains(ws, morning):
    spec, folder, rows, afternoon = morning
    with Registry(ws) as registry:
        update = run_incremental(ws, registry, spec, str(folder), SIX_HOURS)
        version = registry.versions(MAIN_CHAIN)[-1]
    assert update.candidate == 2 and update.gate is not None  # judged by the gate...
    assert version["status"] != "candidate" and version["decision"]  # ...and decided
    meta = version["meta"]
    assert meta["update"]["kind"] == "incremental" and meta["update"]["parent"] == 1
    assert meta["window"] == ["2024-01-03"] and meta["parent"] == 1
    # trained on the newest six hours only, less the gate's holdout slice
    since = rows["ts"].max() - SIX_HOURS
    held = rows.select(
        bucket_of("impression_id", spec.train.seed + 1) < round(spec.gate.holdout_fraction * 1e4)
    ).to_series()
    expected = rows.filter((pl.col("ts") >= since) & ~held).height
    assert update.update["rows"] == expected and expected < rows.height
    # nothing new: nothing to do
    with Registry(ws) as registry:
        again = run_incremental(ws, registry, spec, str(folder), SIX_HOURS)
    assert again.outcome == CycleOutcome.NOTHING_NEW and again.candidate is None
    # the rest of the day arrives: the nightly cycle trains day 3's own version
    afternoon.write_parquet(folder / "day3-afternoon.parquet")
    with Registry(ws) as registry:
        night = run_cycle(ws, registry, spec, str(folder))
        nightly = registry.versions(MAIN_CHAIN)[-1]
    assert night.candidate == 3 and nightly["day"] == "2024-01-03"
    assert "update" not in nightly["meta"]


def test_an_incremental_update_needs_a_live_version(tmp_path, ws, tiny_logs):
    spec = load_spec(write_spec(tmp_path, "no-live"))
    with Registry(ws) as registry, pytest.raises(BadInput, match="no live version"):
        run_incremental(ws, registry, spec, str(tiny_logs[0]), SIX_HOURS)


def test_the_command_refuses_what_an_incremental_update_cannot_do(tmp_path, ws):
    from typer.testing import CliRunner

    from reloop_cli.cli import app

    spec = str(write_spec(tmp_path, "cli"))
    base = ["run", "--spec", spec, "--logs", str(tmp_path), "-w", str(ws.root)]
    runner = CliRunner()
    bad = runner.invoke(app, [*base, "--incremental", "soon"])
    assert bad.exit_code == 2 and "--incremental: 'soon'" in bad.output
    backfill = runner.invoke(app, [*base, "--incremental", "6h", "--day", "2024-01-02"])
    assert backfill.exit_code == 2 and "not with --day" in backfill.output


def test_a_pass_over_too_few_rows_trains_and_publishes_nothing(ws, morning):
    """Reproduction: `reloop run --incremental 1s` trained on 0 rows, "passed" the gate at
    +0.0000 [+0.0000, +0.0000] and published a new version."""
    spec, folder, _, _ = morning
    with Registry(ws) as registry:
        update = run_incremental(ws, registry, spec, str(folder), 1.0)
        versions = registry.versions(MAIN_CHAIN)
        live = registry.live(MAIN_CHAIN)
    assert update.outcome == CycleOutcome.NOTHING_NEW and update.candidate is None
    assert "fewer than one batch" in update.waiting and update.live_after == live == 1
    assert [v["version"] for v in versions] == [1]
    assert "2024-01-03" in ws.days()  # the new rows were ingested all the same
