"""`reloop run` as cron runs it: real subprocesses, kills at every step, the lock, the gate."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import polars as pl
import pytest
import torch

from reloop_cli.errors import EXIT_BAD_INPUT, EXIT_GATE_REFUSED, EXIT_LOCKED
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from tests.helpers import Feed, cycle, reloop, write_spec

pytestmark = pytest.mark.slow  # subprocesses and ranks: seconds each


def weights(ws: Path, version: int) -> dict[str, torch.Tensor]:
    return torch.load(ws / "models" / f"v{version:04d}" / "weights.pt", weights_only=True)


def state(ws: Path) -> dict:
    with Registry(Workspace(ws)) as registry:
        return {
            "live": registry.live("main"),
            "versions": [(v["version"], v["day"], v["status"]) for v in registry.versions("main")],
        }


@pytest.fixture(scope="module")
def first_night(tmp_path_factory, tiny_logs):
    """The first nightly cycle (days 1-2, v1 live): where every test of the second one starts.
    A copy of it is the same workspace: what it holds names files by content, not path."""
    root = tmp_path_factory.mktemp("first-night")
    feed = Feed(tiny_logs, root / "drop")
    feed.arrive(2)
    result = cycle(root / "ws", write_spec(root, "spec"), feed)
    assert result.returncode == 0, result.stderr
    return root / "ws"


def after_first_night(first_night: Path, folder: Path) -> Path:
    ws = folder / "ws"
    shutil.copytree(first_night, ws)
    return ws


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_logs, first_night):
    """The second nightly cycle with nothing going wrong: the reference every crash must reach."""
    root = tmp_path_factory.mktemp("reference")
    ws = after_first_night(first_night, root)
    feed = Feed(tiny_logs, root / "drop")
    feed.arrive(3)
    result = cycle(ws, write_spec(root, "spec"), feed)
    assert result.returncode == 0, result.stderr
    return ws


@pytest.mark.parametrize("crash_at", ["ingest", "score", "vocab", "train", "publish", "promote"])
def test_a_cycle_killed_anywhere_is_finished_by_the_next_one(
    tmp_path, tiny_logs, first_night, uninterrupted, crash_at
):
    spec, feed = write_spec(tmp_path, "spec"), Feed(tiny_logs, tmp_path / "drop")
    ws = after_first_night(first_night, tmp_path)
    feed.arrive(3)
    killed = cycle(ws, spec, feed, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL
    # Whatever was left is consistent: no half version is visible.
    for folder in (ws / "models").glob("v*"):
        assert (folder / "meta.json").exists() and (folder / "weights.pt").exists()
    assert state(ws)["live"] == 1  # the old version still serves
    if crash_at == "vocab":  # killed before the new vocabulary was written: the old one stays
        from reloop_cli.features import vocabulary

        assert vocabulary.generation(vocabulary.load(Workspace(ws))) == 1
    rerun = cycle(ws, spec, feed)
    assert rerun.returncode == 0, rerun.stderr
    assert state(ws) == state(uninterrupted)
    expected, got = weights(uninterrupted, 2), weights(ws, 2)
    assert expected.keys() == got.keys()
    for name in expected:  # the same rows, seed and steps: the same weights. Two processes may
        # sum in another order (CI saw one such run, unreproduced here in 30); the tolerance is
        # far below what training on other rows or with another seed changes.
        torch.testing.assert_close(
            got[name], expected[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert not list(ws.rglob(".tmp-*"))
    assert cycle(ws, spec, feed).returncode == 0 and state(ws) == state(uninterrupted)


def test_same_cycle_twice_makes_no_second_version(uninterrupted, tmp_path, tiny_logs):
    before = state(uninterrupted)
    feed = Feed(tiny_logs, tmp_path / "drop")
    feed.arrive(3)
    again = cycle(uninterrupted, write_spec(tmp_path, "spec"), feed)
    assert again.returncode == 0 and "nothing new" in again.stdout
    assert state(uninterrupted) == before


def test_a_second_run_exits_at_once_while_one_holds_the_lock(tmp_path, tiny_logs):
    ws, feed = Workspace(tmp_path / "ws"), Feed(tiny_logs, tmp_path / "drop")
    feed.arrive(2)
    with ws.lock():
        result = cycle(ws.root, write_spec(tmp_path, "spec"), feed)
    assert result.returncode == EXIT_LOCKED
    assert "locked by pid" in result.stderr


def test_gate_refusal_keeps_the_old_version_serving_and_force_overrides(
    tmp_path, tiny_logs, first_night
):
    ws, feed = after_first_night(first_night, tmp_path), Feed(tiny_logs, tmp_path / "drop")
    feed.arrive(3)
    broken = write_spec(tmp_path, "broken", lr=1e-7)  # a candidate that learns nothing
    refused = cycle(ws, broken, feed)
    assert refused.returncode == EXIT_GATE_REFUSED, refused.stderr
    assert "rejected" in refused.stdout
    assert state(ws) == {
        "live": 1,
        "versions": [(1, "2024-01-02", "live"), (2, "2024-01-03", "rejected")],
    }
    feed.arrive(4)
    forced = cycle(ws, broken, feed, "--force", "--json")
    assert forced.returncode == 0
    report = json.loads(forced.stdout)
    assert report["outcome"] == "promoted" and report["gate"]["forced"]
    assert state(ws)["live"] == 3


def test_rollback_and_manual_promote_are_recorded(uninterrupted, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(uninterrupted, ws)
    rolled = reloop("rollback", "-w", str(ws), "--json")
    assert rolled.returncode == 0
    assert json.loads(rolled.stdout) == {"live": 1, "rolled_back": 2, "reason": "rollback"}
    assert state(ws)["live"] == 1
    assert reloop("promote", "2", "-w", str(ws)).returncode == 0
    report = json.loads(reloop("status", "-w", str(ws), "--json").stdout)
    assert report["live"] == 2
    assert [h["reason"] for h in report["live_history"]] == [
        "gate",
        "gate",
        "rollback",
        "manual promote",
    ]


def test_dry_run_writes_nothing(tmp_path, tiny_logs):
    feed = Feed(tiny_logs, tmp_path / "drop")
    feed.arrive(2)
    result = cycle(tmp_path / "ws", write_spec(tmp_path, "spec"), feed, "--dry-run")
    assert result.returncode == 0 and "ingest 2 new file(s)" in result.stdout
    assert not (tmp_path / "ws").exists()


def test_a_day_with_too_many_bad_rows_fails_without_promoting(tmp_path, tiny_logs, first_night):
    ws, feed = after_first_night(first_night, tmp_path), Feed(tiny_logs, tmp_path / "drop")
    spec = write_spec(tmp_path, "spec", reject=0.01)
    feed.arrive(2)  # held already: only the bad day below is new
    day = pl.read_parquet(tiny_logs[2])
    bad = day.with_columns(
        pl.when(pl.int_range(pl.len()) < 100)
        .then(5)
        .otherwise(pl.col("click"))
        .cast(pl.Int8)
        .alias("click")
    )
    bad.write_parquet(feed.folder / tiny_logs[2].name)
    result = cycle(ws, spec, feed)
    assert result.returncode == EXIT_BAD_INPUT
    assert "label '5' is not 0 or 1" in result.stderr
    assert state(ws)["live"] == 1 and len(state(ws)["versions"]) == 1


def test_dry_run_on_a_live_workspace_plans_the_cycle_and_touches_nothing(
    uninterrupted, tmp_path, tiny_logs
):
    ws = tmp_path / "ws"
    shutil.copytree(uninterrupted, ws)
    feed = Feed(tiny_logs, tmp_path / "drop")
    feed.arrive(4)

    def files() -> dict:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in ws.rglob("*")}

    before = files()
    result = cycle(ws, write_spec(tmp_path, "spec"), feed, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "ingest 1 new file(s)" in result.stdout
    assert "live v2 serves 2024-01-04" in result.stdout
    assert "train a candidate (reloop, parent v2) on 2024-01-03..2024-01-04" in result.stdout
    assert files() == before
