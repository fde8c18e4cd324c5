"""`reloop revisits`: a day's rows by how long their value was away, and what a horizon evicts."""

from __future__ import annotations

import itertools
import json
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.errors import BadInput
from reloop_cli.features import vocabulary
from reloop_cli.features.revisits import revisits
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.store.workspace import Workspace
from tests.helpers import REPO


def spec(**vocabulary_rules):
    return spec_from_dict(
        {"data": {"categorical": ["user", "site"]}, "vocabulary": vocabulary_rules},
        "revisits.toml",
    )


def write_day(ws: Workspace, day: str, users: list[str], sites: list[str] | None = None) -> None:
    folder = ws.log_dir(day)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame({"user": users, "site": sites or ["s"] * len(users)})
    frame.write_parquet(folder / "part-0.parquet")


def test_rows_split_into_new_and_returning_with_their_days_away(ws):
    write_day(ws, "2024-01-01", ["a", "b"])
    write_day(ws, "2024-01-04", ["b", "c"])
    write_day(ws, "2024-01-05", ["a", "a", "b", "c", "d"])
    report = revisits(ws, spec(), None, [1, 3, 4])
    users = report.fields["user"]
    assert report.day == "2024-01-05"
    # a away 4 days (twice, rows count), b and c 1 day, d new
    assert (users.rows, users.new_rows, users.returning_rows) == (5, 1, 4)
    assert users.evicted_share == {1: 2 / 5, 3: 2 / 5, 4: 0.0}
    assert users.gap_quantiles == {"p50": 1.0, "p90": 4.0, "p99": 4.0}  # each row counts
    assert report.fields["site"].evicted_share == {1: 0.0, 3: 0.0, 4: 0.0}  # seen the day before


def test_a_value_away_longer_than_the_lookback_counts_as_new(ws):
    write_day(ws, "2024-01-01", ["a"])
    write_day(ws, "2024-01-20", ["a", "b"])
    write_day(ws, "2024-01-21", ["a", "b"])
    report = revisits(ws, spec(), "2024-01-20", [5], lookback_days=10)
    assert report.history_days == []  # 2024-01-01 is outside the 10 days
    assert report.fields["user"].new_rows == 2
    assert revisits(ws, spec(), "2024-01-20", [5], lookback_days=30).fields["user"].new_rows == 1


@pytest.mark.slow
def test_the_share_over_a_horizon_is_what_the_vocabulary_evicts_at_that_horizon(ws):
    """The report must price the vocabulary's own rule: the rows of day D whose value the update
    before D's version (trained on D-1) had evicted, though seen before."""
    generator = np.random.default_rng(0)
    start = date(2024, 1, 1)
    days = [(start + timedelta(days=i)).isoformat() for i in range(14)]
    for day in days:  # users visit on random days, some rarely: gaps of every length
        visits = [f"u{u}" for u in range(40) if generator.random() < 0.05 + u / 100]
        write_day(ws, day, visits or ["u0"])
    evicted_total = {}
    for horizon in (1, 2, 3, 5):
        rules = spec(evict_after_days=horizon)
        scope = f"h{horizon}"
        for previous, day in itertools.pairwise(days):
            kept = vocabulary.refresh(ws, rules, ws.scan_logs([previous]), previous, scope=scope)
            live = set(kept.view.filter(pl.col("field") == "user")["value"])
            seen_before = set(ws.scan_logs(days[: days.index(day)]).collect()["user"])
            today = ws.scan_logs([day]).collect()["user"].to_list()
            evicted_rows = sum(1 for u in today if u in seen_before and u not in live)
            report = revisits(ws, rules, day, [horizon]).fields["user"]
            assert report.evicted_share[horizon] * report.rows == pytest.approx(evicted_rows)
            evicted_total[horizon] = evicted_total.get(horizon, 0) + evicted_rows
    # the comparison had rows to count, fewer as the horizon grows
    assert evicted_total[1] > evicted_total[3] > evicted_total[5] > 0


def test_a_multivalued_field_counts_each_tag_it_looks_up(ws):
    tags = spec_from_dict(
        {"data": {"categorical": ["user"], "multivalued": ["tags"]}}, "revisits.toml"
    )
    for day, lists in [("2024-01-01", [["x", "y"]]), ("2024-01-03", [["x", "z"], []])]:
        folder = ws.log_dir(day)
        folder.mkdir(parents=True)
        frame = pl.DataFrame({"user": ["a"] * len(lists), "tags": lists})
        frame.write_parquet(folder / "part-0.parquet")
    entry = revisits(ws, tags, None, [1]).fields["tags"]
    assert (entry.rows, entry.new_rows) == (2, 1)  # x back after 2 days, z new; no tag: none
    assert entry.evicted_share == {1: 0.5}


def test_hashed_fields_are_named_not_priced(ws):
    write_day(ws, "2024-01-01", ["a"])
    write_day(ws, "2024-01-02", ["a"])
    report = revisits(ws, spec(hash_buckets={"site": 10}), None, [1])
    assert list(report.fields) == ["user"] and report.hashed == ["site"]


def test_bad_horizons_and_lookback_are_refused_with_the_option_named(ws):
    write_day(ws, "2024-01-01", ["a"])
    with pytest.raises(BadInput, match=r"horizons \[0\]: give whole days"):
        revisits(ws, spec(), None, [0])
    with pytest.raises(BadInput, match="lookback_days 14"):
        revisits(ws, spec(), None, [14, 28], lookback_days=14)
    with pytest.raises(BadInput, match="no logs for day 2023-12-31"):
        revisits(ws, spec(), "2023-12-31", [1])
    with pytest.raises(BadInput, match="nothing ingested"):
        revisits(Workspace(ws.root / "empty"), spec(), None, [1])


def test_the_command_prints_each_field_and_its_json(tmp_path, tiny_logs):
    runner = CliRunner()
    workspace = str(tmp_path / "ws")
    spec_file = str(REPO / "pipelines" / "sample.toml")
    ingest = runner.invoke(
        app, ["--quiet", "ingest", *map(str, tiny_logs), "--spec", spec_file, "-w", workspace]
    )
    assert ingest.exit_code == 0, ingest.output
    shown = runner.invoke(app, ["revisits", "-w", workspace, "--horizons", "1,2"])
    assert shown.exit_code == 0, shown.output
    assert "item_id" in shown.output and "> 2 d" in shown.output
    payload = json.loads(runner.invoke(app, ["revisits", "-w", workspace, "--json"]).output)
    assert set(payload["fields"]) >= {"user_id", "item_id"}
    bad = runner.invoke(app, ["revisits", "-w", workspace, "--horizons", "two"])
    assert bad.exit_code == 2 and "--horizons" in bad.output
