"""The click join: a click inside the window labels its impression 1, one after it does not; an
impression still inside its window waits for the next run; a click for an unknown impression is
counted, never a row; joining the same files twice gives the same rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from reloop_cli.errors import BadInput
from reloop_cli.operations.served_cycle import run_server_cycle
from reloop_cli.serving.clickjoin import CLICK_FATES, join_clicks, served_spec
from reloop_cli.store.quarantine import quarantined
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from tests.serving.conftest import client_for

T0 = 1_704_103_200.0  # 2024-01-01 10:00 UTC
WINDOW = 30 * 60


def write_part(folder, kind: str, name: str, rows: list[dict]) -> None:
    day = folder / kind / "day=2024-01-01"
    day.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(day / f"{name}.parquet")


def impression(impression_id: str, ts: float) -> dict:
    return {
        "impression_id": impression_id,
        "request_id": "r",
        "ts": ts,
        "user_id": "00001",
        "item_id": "000001",
        "category": "1",
        "hour": "10",
        "device": "mobile",
        "position": "1",
        "served_version": 1,
        "served_pctr": 0.1,
        "slot": 1,
        "propensity": 1.0,
    }


@pytest.fixture()
def logs(tmp_path):
    folder = tmp_path / "serving-logs"
    write_part(folder, "impressions", "boot-000001", [impression(i, T0) for i in "abc"])
    write_part(folder, "impressions", "boot-000002", [impression("d", T0 + 7_200)])
    clicks = [
        {"impression_id": "a", "ts": T0 + 60},  # inside the window
        {"impression_id": "b", "ts": T0 + 3_600},  # after it
        {"impression_id": "zzz", "ts": T0 + 100},  # an impression nobody logged
        {"impression_id": "d", "ts": T0 + 7_300},
    ]
    write_part(folder, "clicks", "boot-000001", clicks)
    return folder


def labels(ws: Workspace) -> dict[str, int]:
    rows = pl.read_parquet(ws.joined / "*.parquet")
    return dict(zip(rows["impression_id"], rows["click"], strict=True))


def test_clicks_inside_the_window_label_and_open_windows_wait(tmp_path, logs, sample_spec):
    ws = Workspace(tmp_path / "ws")
    first = join_clicks(ws, sample_spec, logs, as_of=T0 + WINDOW + 60)
    assert (first.impressions, first.clicked, first.held_back) == (3, 1, 1)
    assert first.after_window == 1 and first.clicks_labelled == 1
    assert first.unknown_clicks == 0  # zzz (at T0 + 100) is not settled until T0 + 1,902
    assert labels(ws) == {"a": 1, "b": 0, "c": 0}
    nothing = join_clicks(ws, sample_spec, logs, as_of=T0 + WINDOW + 120)
    assert nothing.impressions == 0 and nothing.held_back == 1  # d's window is still open
    assert nothing.unknown_clicks == 1 and nothing.after_window == 0  # each click counted once
    later = join_clicks(ws, sample_spec, logs, as_of=T0 + 7_200 + WINDOW + 60)
    assert (later.impressions, later.clicked, later.held_back) == (1, 1, 0)
    assert later.unknown_clicks == 0 and later.clicks_labelled == 1
    assert labels(ws) == {"a": 1, "b": 0, "c": 0, "d": 1}
    assert "zzz" not in labels(ws)


def test_joining_the_same_files_twice_gives_the_same_rows(tmp_path, logs, sample_spec):
    once, twice = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    for ws in (once, twice):
        join_clicks(ws, sample_spec, logs, as_of=T0 + 86_400)
    rows = [pl.read_parquet(ws.joined / "*.parquet").sort("impression_id") for ws in (once, twice)]
    assert rows[0].equals(rows[1]) and rows[0].height == 4
    assert rows[0]["ts"].dtype == pl.Datetime("us", "UTC")
    again = join_clicks(once, sample_spec, logs, as_of=T0 + 86_400)
    assert again.impressions == 0 and again.files == []  # every file was joined already


def test_the_served_spec_reads_the_servers_columns(sample_spec):
    spec = served_spec(sample_spec)
    assert spec.data.pctr == "served_pctr" and spec.data.impression_id == "impression_id"
    assert spec.train.last_source == "served" and spec.data.label == sample_spec.data.label


@pytest.mark.slow
def test_a_cycle_from_the_server_trains_on_what_it_served_and_publishes(published, tiny_logs):
    ws, spec = published
    raw = pl.read_parquet(tiny_logs[3]).head(3_000)
    rows = raw.select("user_id", "item_id", "category", "hour", "device", "position").to_dicts()
    requests = [rows[i : i + 10] for i in range(0, len(rows), 10)]
    with client_for(ws, spec, trust_client_time=True) as client:
        shown = []
        for index, candidates in enumerate(requests):
            when = 1_704_326_400 + index * 20  # 2024-01-04, as the logs' day
            answer = client.post(
                "/score", json={"candidates": candidates, "slots": 2, "time": when}
            ).json()
            shown += [(s["impression_id"], when) for s in answer["slate"]]
        clicked = [{"impression_id": i, "time": t + 30} for i, t in shown[::7]]
        client.post("/feedback", json={"clicks": clicked})
    with Registry(ws) as registry:
        result = run_server_cycle(ws, registry, spec, as_of=1_704_326_400 + 86_400 + 3_600)
    assert result.join["impressions"] == len(shown) and result.join["clicked"] == len(clicked)
    assert result.day == "2024-01-04" and result.ingested_rows == len(shown)
    assert result.candidate == 2 and result.outcome in ("promoted", "rejected", "inconclusive")
    held = ws.scan_logs(["2024-01-04"]).collect()
    assert held["served_pctr"].is_not_null().all() and held["label"].sum() == len(clicked)


def damage(folder, kind: str, name: str, how: str) -> str:
    """A log file spoiled as disks, copy tools and people spoil them; returns its name."""
    day = folder / kind / "day=2024-01-01"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"{name}.parquet"
    good = pl.DataFrame([impression(f"{name}-{i}", T0) for i in range(50)])
    if how == "no rows":
        good.head(0).write_parquet(path)
    elif how == "truncated":
        good.write_parquet(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "0 bytes":
        path.write_bytes(b"")
    elif how == "no time":
        good.drop("ts").write_parquet(path)
    elif how == "text time":
        good.with_columns(pl.col("ts").cast(pl.String)).write_parquet(path)
    return path.name


def test_damaged_server_logs_are_quarantined_and_the_night_goes_on(tmp_path, logs, sample_spec):
    """Reproduction: a 0-row, truncated or 0-byte file, or one without its time column, was
    `internal error: ...` naming no file, and the night did nothing."""
    spoiled = {
        ("impressions", "bad-rows"): "no rows",
        ("impressions", "bad-cut"): "not a readable Parquet file",
        ("impressions", "bad-empty"): "an empty file (0 bytes)",
        ("clicks", "bad-notime"): "no column 'ts'",
        ("impressions", "bad-text"): "column 'ts' holds String",
    }
    how = ["no rows", "truncated", "0 bytes", "no time", "text time"]
    for (kind, name), spoil in zip(spoiled, how, strict=True):
        damage(logs, kind, name, spoil)
    ws = Workspace(tmp_path / "ws")
    result = join_clicks(ws, sample_spec, logs, as_of=T0 + 86_400)
    assert result.impressions == 4  # the good files are joined all the same
    reasons = {Path(q["source"]).stem: q["reason"] for q in result.quarantined}
    assert set(reasons) == {name for _, name in spoiled}
    for (kind, name), says in spoiled.items():
        assert reasons[name].startswith(says), reasons[name]
        assert not (logs / kind / "day=2024-01-01" / f"{name}.parquet").exists()
        assert (ws.quarantine / kind / f"day=2024-01-01__{name}.parquet").exists()
    assert len(quarantined(ws)) == 5
    again = join_clicks(ws, sample_spec, logs, as_of=T0 + 2 * 86_400)
    assert again.quarantined == [] and again.impressions == 0


def test_every_click_is_counted_once_in_one_place(tmp_path, sample_spec):
    """Reproduction: a click timed before its impression, or arriving after its impression's
    file was joined, was counted nowhere; `unknown_clicks` re-reported the same clicks every
    night."""
    folder = tmp_path / "serving-logs"
    write_part(folder, "impressions", "boot-000001", [impression(i, T0) for i in "abcd"])
    first_clicks = [
        {"impression_id": "a", "ts": T0 + 60},  # labels a
        {"impression_id": "a", "ts": T0 + 90},  # a second click on a: labels it too
        {"impression_id": "b", "ts": T0 - 5},  # before its impression
        {"impression_id": "c", "ts": T0 + 3_600},  # after its window
        {"impression_id": "nobody", "ts": T0 + 10},  # unknown
    ]
    write_part(folder, "clicks", "boot-000001", first_clicks)
    ws = Workspace(tmp_path / "ws")
    runs = [join_clicks(ws, sample_spec, folder, as_of=T0 + 2 * 3_600)]
    # a click inside d's window that reached the disk after d was joined, and one more unknown
    write_part(
        folder,
        "clicks",
        "boot-000002",
        [{"impression_id": "d", "ts": T0 + 120}, {"impression_id": "gone", "ts": T0 + 4_000}],
    )
    runs += [join_clicks(ws, sample_spec, folder, as_of=T0 + hours * 3_600) for hours in (3, 4, 5)]
    total = {fate: sum(getattr(run, fate) for run in runs) for fate in CLICK_FATES}
    assert total == {
        "clicks_labelled": 2,
        "before_impression": 1,
        "after_window": 1,
        "after_join": 1,
        "unknown_clicks": 2,
    }
    assert sum(total.values()) == 7  # every click written, each in one count
    assert labels(ws) == {"a": 1, "b": 0, "c": 0, "d": 0}
    assert "after_join" in runs[1].summary() or "arrived after" in runs[1].summary()


def test_a_log_dir_that_does_not_exist_is_an_error(published, tmp_path):
    ws, spec = published
    with Registry(ws) as registry, pytest.raises(BadInput, match="does not exist"):
        run_server_cycle(ws, registry, spec, tmp_path / "typo", as_of=T0)


def test_a_joined_file_ingest_refuses_is_quarantined_once(published):
    ws, spec = published
    ws.joined.mkdir(parents=True, exist_ok=True)
    row = {**impression("x1", T0), "click": 2}  # a label no model learns from
    bad = pl.DataFrame([row]).with_columns(
        (pl.col("ts") * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    )
    bad.write_parquet(ws.joined / "refused.parquet")
    with Registry(ws) as registry:
        first = run_server_cycle(ws, registry, spec, as_of=T0 + 86_400)
        assert [Path(q["source"]).name for q in first.quarantined] == ["refused.parquet"]
        assert "label '2' is not 0 or 1" in first.quarantined[0]["reason"]
        second = run_server_cycle(ws, registry, spec, as_of=T0 + 2 * 86_400)
    assert second.quarantined == []
    assert [q.source for q in quarantined(ws)] == [str(ws.joined / "refused.parquet")]


DAY4 = 1_704_326_400.0  # 2024-01-04 00:00 UTC


@pytest.mark.slow
def test_the_night_trains_the_last_complete_day_while_the_server_writes_on(published, tiny_logs):
    """Reproduction: with the server still serving, a run at 02:15 on day 5 trained day 5's
    first hour (30 rows, 0 holdout clicks) and day 4 never got its version."""
    ws, spec = published
    rows = pl.read_parquet(tiny_logs[3]).head(3_000)
    rows = rows.select("user_id", "item_id", "category", "hour", "device", "position").to_dicts()
    with client_for(ws, spec, trust_client_time=True) as client:

        def serve(start: float, end: float) -> None:
            """Requests spread over [start, end), crossing midnight if the span does."""
            count = len(rows) // 10
            for index in range(count):
                when = start + (end - start) * index / count
                body = {"candidates": rows[index * 10 : index * 10 + 10], "slots": 2}
                shown = client.post("/score", json={**body, "time": when}).json()["slate"]
                if index % 4 == 0:
                    click = {"impression_id": shown[0]["impression_id"], "time": when + 60}
                    client.post("/feedback", json={"clicks": [click]})
            client.service.impressions.flush()
            client.service.clicks.flush()

        serve(DAY4 + 6 * 3_600, DAY4 + 86_400 + 3_600)  # day 4 06:00 .. day 5 01:00
        with Registry(ws) as registry:
            night = run_server_cycle(ws, registry, spec, as_of=DAY4 + 86_400 + 2.25 * 3_600)
            assert night.day == "2024-01-04" and night.candidate == 2
            assert "2024-01-05" in ws.days()  # its first hours ingested, not trained on
            assert all(v["day"] != "2024-01-05" for v in registry.versions())
        serve(DAY4 + 86_400 + 3_600, DAY4 + 2 * 86_400)  # the rest of day 5
        with Registry(ws) as registry:
            early = run_server_cycle(ws, registry, spec, as_of=DAY4 + 2 * 86_400 + 600)
            assert early.outcome == "nothing-new" and early.day == "2024-01-04"
            assert "2024-01-05 is still open until 2024-01-06T00:30:02+00:00" in early.waiting
            next_night = run_server_cycle(ws, registry, spec, as_of=DAY4 + 2 * 86_400 + 8_100)
            assert next_night.day == "2024-01-05" and next_night.candidate == 3
