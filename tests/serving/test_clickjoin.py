"""The click join: a click inside the window labels its impression 1, one after it does not; an
impression still inside its window waits for the next run; a click for an unknown impression is
counted, never a row; joining the same files twice gives the same rows."""

from __future__ import annotations

import polars as pl
import pytest

from reloop_cli.operations.served_cycle import run_server_cycle
from reloop_cli.serving.clickjoin import join_clicks, served_spec
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
