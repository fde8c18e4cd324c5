"""Experiment arms in `reloop serve`: stable, monotone routing by unit; every impression logged
with its arm; shadow scoring logged and never shown; swaps of the candidate fail no request."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import polars as pl
import pytest
from scipy import stats

from reloop_cli.operations.experiment import judge_experiment, start_experiment, stop_experiment
from reloop_cli.serving.arms import BUCKETS, bucket, in_candidate, read_candidate, unit_of
from reloop_cli.store.experiments import Experiments
from reloop_cli.store.registry import Registry
from reloop_cli.training.train import Lineage, train_version
from tests.serving.conftest import client_for

FIELDS = ["user_id", "item_id", "category", "hour", "device", "position"]
UNITS = [f"user_id=u{i}" for i in range(10_000)]


def test_a_unit_lands_in_the_same_arm_in_every_process():
    mine = [bucket("e1", unit) for unit in UNITS[:200]]
    code = (
        "from reloop_cli.serving.arms import bucket;"
        "print(','.join(str(bucket('e1', f'user_id=u{i}')) for i in range(200)))"
    )
    for seed in ("1", "2"):  # Python's own string hash differs per process; ours must not
        other = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        assert [int(b) for b in other.split(",")] == mine


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_the_shares_hold_within_a_binomial_interval(share):
    chosen = sum(in_candidate("exp-7", unit, share) for unit in UNITS)
    low, high = stats.binom.interval(0.999, len(UNITS), share)
    assert low <= chosen <= high


def test_raising_the_share_only_moves_units_into_the_candidate():
    at_5 = {u for u in UNITS if in_candidate("exp-7", u, 0.05)}
    at_50 = {u for u in UNITS if in_candidate("exp-7", u, 0.5)}
    assert at_5 < at_50  # every unit at 5% is still there at 50%
    moved = len(at_50 - at_5)
    low, high = stats.binom.interval(0.999, len(UNITS), 0.45)
    assert low <= moved <= high


def test_experiments_split_users_independently():
    first = np.array([in_candidate("exp-a", u, 0.5) for u in UNITS])
    second = np.array([in_candidate("exp-b", u, 0.5) for u in UNITS])
    both = (first & second).sum()
    low, high = stats.binom.interval(0.999, len(UNITS), 0.25)
    assert low <= both <= high
    assert 0 <= min(bucket("x", u) for u in UNITS[:50]) < BUCKETS


def test_the_unit_is_the_user_field_else_the_request():
    assert unit_of([{"item_id": "i"}, {"user_id": "u7"}], "user_id", "r1") == "user_id=u7"
    assert unit_of([{"item_id": "i"}], "user_id", "r1") == "request=r1"
    assert unit_of([{"user_id": "u7"}], "", "r1") == "request=r1"


@pytest.fixture()
def two_versions(published):
    """v1 live, v2 trained on the next day (not live)."""
    ws, spec = published
    spec = spec.override("experiment", unit="user_id", shares=(0.5,))
    with Registry(ws) as registry:
        train_version(ws, registry, spec, "2024-01-03", Lineage(promote=False))
    return ws, spec


def requests(tiny_logs, users: int = 60) -> list[dict]:
    rows = pl.read_parquet(tiny_logs[2]).select(FIELDS)
    return [
        {
            "request_id": f"r{i}",
            "context": {"user_id": f"u{i % users}"},
            "candidates": rows.slice(i * 3, 3).drop("user_id").to_dicts(),
            "slots": 1,
        }
        for i in range(200)
    ]


def logged(ws) -> pl.DataFrame:
    return pl.read_parquet(ws.serving_logs / "impressions" / "*" / "*.parquet")


def test_every_impression_carries_its_arm_and_a_user_sees_one_version(two_versions, tiny_logs):
    ws, spec = two_versions
    with Registry(ws) as registry:
        experiment = start_experiment(ws, registry, spec, 2)
    with client_for(ws, spec) as client:
        answers = [client.post("/score", json=body).json() for body in requests(tiny_logs)]
    rows = logged(ws)
    assert rows["experiment_id"].unique().to_list() == [experiment.id]
    assert set(rows["experiment_arm"].unique()) == {"live", "candidate"}
    per_user = rows.group_by("experiment_unit").agg(
        pl.col("served_version").n_unique().alias("versions"),
        pl.col("experiment_arm").n_unique().alias("arms"),
    )
    assert per_user["versions"].max() == 1 and per_user["arms"].max() == 1
    arm_version = rows.select("experiment_arm", "served_version").unique()
    assert sorted(arm_version.rows()) == [("candidate", 2), ("live", 1)]
    for answer in answers:  # the answer says which arm, and is that arm's version
        assert answer["version"] == (2 if answer["experiment"]["arm"] == "candidate" else 1)


def test_shadow_logs_the_candidates_pctr_and_shows_only_live(two_versions, tiny_logs):
    ws, spec = two_versions
    with Registry(ws) as registry:
        start_experiment(ws, registry, spec, 2, shadow_nights=1)
    with client_for(ws, spec) as client:
        answers = [client.post("/score", json=body).json() for body in requests(tiny_logs)[:40]]
    rows = logged(ws)
    assert {a["version"] for a in answers} == {1}
    assert rows["served_version"].unique().to_list() == [1]
    assert rows["shadow_pctr"].null_count() == 0
    assert not np.allclose(rows["shadow_pctr"].to_numpy(), rows["served_pctr"].to_numpy())


def test_no_experiment_logs_null_arms(published, tiny_logs):
    ws, spec = published
    with client_for(ws, spec) as client:
        answer = client.post("/score", json=requests(tiny_logs)[0]).json()
    assert "experiment" not in answer
    rows = logged(ws)
    assert rows["experiment_arm"].null_count() == rows.height


def test_starting_ramping_and_ending_an_experiment_fails_no_request(two_versions, tiny_logs):
    ws, spec = two_versions
    fast = spec.override("serving", reload_seconds=0.05)
    bodies = requests(tiny_logs)
    answers, failures = [], []
    with client_for(ws, fast) as client:
        stop = threading.Event()

        def stream():
            i = 0
            while not stop.is_set():
                answer = client.post("/score", json=bodies[i % len(bodies)])
                (answers if answer.status_code == 200 else failures).append(answer)
                i += 1

        worker = threading.Thread(target=stream)
        worker.start()
        with Registry(ws) as registry:
            time.sleep(0.2)
            start_experiment(ws, registry, spec, 2)
            time.sleep(1.0)
            stop_experiment(ws, registry, "test")
            time.sleep(0.5)
        stop.set()
        worker.join()
        with Registry(ws) as registry:
            assert Experiments(registry).running("main") is None
    assert failures == []
    arms = [a.json().get("experiment", {}).get("arm") for a in answers]
    assert {"live", "candidate"} <= set(arms)
    assert arms[-1] is None  # ended: live alone again
    for answer in answers:
        payload = answer.json()
        assert payload["version"] == (
            2 if payload.get("experiment", {}).get("arm") == "candidate" else 1
        )


def test_a_candidate_left_by_a_killed_run_is_withdrawn_by_the_next_night(two_versions):
    ws, spec = two_versions
    with Registry(ws) as registry:
        experiment = start_experiment(ws, registry, spec, 2)
        store = Experiments(registry)
        experiment.status = "promoted"  # as a run killed after recording, before withdrawing
        store.update(experiment)
        assert read_candidate(ws.serving) is not None
        assert judge_experiment(ws, registry, spec) is None
    assert read_candidate(ws.serving) is None


def test_a_damaged_candidate_pointer_serves_live_alone_and_is_withdrawn(two_versions, tiny_logs):
    ws, spec = two_versions
    with Registry(ws) as registry:
        experiment = start_experiment(ws, registry, spec, 2)
    pointer = ws.serving / "CANDIDATE"
    pointer.write_text('{"experiment": "' + experiment.id + '", "rel')  # cut mid-write
    with client_for(ws, spec) as client:  # it boots, and serves live to everyone
        answers = [client.post("/score", json=body) for body in requests(tiny_logs)[:20]]
        health = client.get("/health").json()
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["version"] for a in answers} == {1}
    assert all("experiment" not in a.json() for a in answers)
    assert health["experiment"] is None
    assert health["experiment_error"].startswith(f"{pointer}: unreadable experiment pointer")
    assert logged(ws)["experiment_id"].null_count() == 20  # nothing credited to either arm
    with Registry(ws) as registry:
        stop_experiment(ws, registry, "the pointer was damaged")
    assert not pointer.exists()


def test_starting_the_live_version_says_loudly_it_is_an_a_a_test(two_versions):
    from typer.testing import CliRunner

    from reloop_cli.cli import app

    ws, spec = two_versions
    ws.write_json(spec.to_dict(), ws.stored_spec_path)
    runner = CliRunner()
    same = runner.invoke(app, ["experiment", "start", "1", "-w", str(ws.root)])
    assert same.exit_code == 0, same.output
    assert "warning: v1 is the live version" in same.output and "A/A" in same.output
    assert runner.invoke(app, ["experiment", "stop", "-w", str(ws.root)]).exit_code == 0
    other = runner.invoke(app, ["experiment", "start", "2", "-w", str(ws.root)])
    assert other.exit_code == 0, other.output
    assert "warning" not in other.output and "v2 against live v1, canary at 50.0%" in other.output


def test_a_damaged_pointer_no_experiment_owns_is_withdrawn_by_the_next_night(two_versions):
    ws, spec = two_versions
    pointer = ws.serving / "CANDIDATE"
    pointer.write_text("{not json")
    with Registry(ws) as registry:
        assert judge_experiment(ws, registry, spec) is None  # no one-line error, no traceback
    assert not pointer.exists()


def test_a_logistic_regression_publishes_and_serves(published, tiny_logs):
    # An LR never reads its embedding, so ReLoop2's memory has no key in it: its release is
    # published without key statistics and served with an empty key (both used to crash:
    # `reloop run` at publish, `reloop serve` at boot).
    from reloop_cli.operations.deploy import publish_live
    from reloop_cli.serving.release import KEY_STATS, pointer

    ws, spec = published
    lr = spec.override("model", name="lr")
    with Registry(ws) as registry:
        train_version(ws, registry, lr, "2024-01-03", Lineage(parent=None, promote=True))
        deployed = publish_live(ws, registry)
    assert deployed.version == 2 and pointer(ws.serving)["version"] == 2
    assert not (ws.releases / deployed.release / KEY_STATS).exists()
    with client_for(ws, spec) as client:
        answer = client.post("/score", json=requests(tiny_logs)[0])
    assert answer.status_code == 200 and answer.json()["version"] == 2
    assert 0 < answer.json()["candidates"][0]["pctr"] < 1
