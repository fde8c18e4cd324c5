"""The promotion policy in the simulator, with real processes: `reloop run --from-server` starts
an experiment for a candidate that passed the gate, the server routes users to its arm, the
experiment is judged and ended, and each candidate's verdicts sit beside its true lift; and the
tally over candidates counts what each policy promoted by the truth."""

from __future__ import annotations

import json
import signal

import polars as pl
import pytest

from reloop_cli.evaluation.policies import Policy
from reloop_cli.experiments.closed_loop import ClosedLoopConfig
from reloop_cli.experiments.online_policy import Candidate, PolicyResult, summarize
from reloop_cli.experiments.over_http import OverHttpConfig
from reloop_cli.store.workspace import Workspace


@pytest.mark.slow  # a server and nightly runs as processes
def test_the_loop_runs_the_policy_and_judges_each_candidate_against_the_truth(
    tmp_path, sample_spec
):
    from reloop_cli.experiments.online_policy import run_online_policy

    spec = sample_spec.override(
        "gate", min_clicks=5, min_auc=0.0, holdout_fraction=0.3, max_auc_drop=1.0
    ).override("gate", max_logloss_rise=10.0)  # every judged candidate passes the gate
    spec = spec.override("experiment", shares=(0.5,), min_units=5, planned_units=100, max_nights=1)
    closed = ClosedLoopConfig(
        days=4, requests=200, candidates=8, policy=Policy("epsilon", 0.05, slots=3), users=60
    )
    root = Workspace(tmp_path / "ws")
    config = OverHttpConfig(closed, "reloop", timeout_seconds=120)
    result = run_online_policy(root, spec, config, plant_faults=True)

    first, started, judged, _ = result.runs
    assert first["outcome"] == "promoted" and first["live_after"] == 1  # nothing to test against
    assert started["outcome"] == "experiment" and started["gate"] == "passed"
    experiment = started["experiment_started"]  # the run says which experiment it started
    assert experiment["candidate"] == 2 and experiment["live"] == 1 and experiment["share"] == 0.5
    assert judged["experiment"]["experiment"]["id"] == experiment["id"]
    assert judged["experiment"]["decision"] in ("promote", "rollback", "inconclusive")

    served = result.online[2]  # the day v2's experiment ran: users split between the arms
    assert set(served["arms"]) == {"live", "candidate"}
    assert served["arms"]["candidate"]["requests"] > 0 and served["arms"]["live"]["requests"] > 0
    assert result.server_exit in (0, -signal.SIGTERM)

    candidate = result.candidates[0]
    assert (candidate.version, candidate.live, candidate.gate) == (2, 1, "passed")
    assert candidate.experiment == experiment["id"] and candidate.nights == 1
    assert candidate.online in ("promoted", "rolled_back", "inconclusive")
    assert [t["day"] for t in candidate.truth] == [result.days[2]]  # judged after one day
    assert 0 < candidate.truth[0]["candidate"] < 1 and 0 < candidate.truth[0]["live"] < 1

    ws = root.online_policy_world(0)
    logged = pl.read_parquet(ws.serving_logs / "impressions" / f"day={result.days[2]}" / "*")
    assert logged["experiment_id"].to_list() == [experiment["id"]] * logged.height
    by_user = logged.group_by("experiment_unit").agg(pl.col("experiment_arm").n_unique())
    assert by_user["experiment_arm"].max() == 1  # a user saw one arm all day

    # The second candidate was trained under the first planted fault, and that night only.
    assert candidate.fault is None
    planted = result.candidates[1]
    assert planted.version == 3 and planted.fault == "model.name = lr"
    trained = json.loads((ws.model_dir(3) / "meta.json").read_text())
    assert trained["spec"]["model"]["name"] == "lr"
    stored = json.loads(ws.stored_spec_path.read_text())
    assert stored["model"]["name"] == spec.model.name


def _candidate(version: int, lift: float, gate: str, online: str | None) -> Candidate:
    truth = [{"day": "d", "candidate": 0.1 * (1 + lift), "live": 0.1}]
    experiment = "e" if online else None
    return Candidate(version, 1, "d", gate, experiment, online, nights=1, truth=truth)


def test_the_tally_counts_promotions_by_the_truth():
    candidates = [
        _candidate(2, +0.05, "passed", "promoted"),  # better: both promote
        _candidate(3, +0.01, "passed", "inconclusive"),  # better: the gate alone promotes
        _candidate(4, -0.01, "passed", "promoted"),  # worse, within the margin: both
        _candidate(5, -0.10, "passed", "rolled_back"),  # harmful: the gate alone promotes
        _candidate(6, -0.10, "refused", None),  # harmful: neither
        _candidate(7, +0.10, "passed", "running"),  # undecided at the end: not counted
    ]
    summary = summarize([PolicyResult(0, 0.02, [], [], [], candidates)])
    gate, online = summary["promotions"]["offline_gate"], summary["promotions"]["online_policy"]
    assert summary["candidates"] == 5 and summary["running_at_end"] == 1
    assert (gate["better"]["promoted"], gate["better"]["of"]) == (2, 2)
    assert (online["better"]["promoted"], online["better"]["of"]) == (1, 2)
    assert (gate["worse"]["promoted"], gate["worse"]["of"]) == (2, 3)
    assert (online["worse"]["promoted"], online["worse"]["of"]) == (1, 3)
    assert (gate["harmful"]["promoted"], gate["harmful"]["of"]) == (1, 2)
    assert online["harmful"]["promoted"] == 0
    rate = gate["harmful"]["rate"]
    assert rate["value"] == 0.5 and 0 < rate["low"] < 0.5 < rate["high"] < 1  # Wilson's
    assert summary["online_outcomes"] == {
        "inconclusive": 1,
        "no experiment": 1,
        "promoted": 2,
        "rolled_back": 1,
    }
