"""The closed loop: reproducible, each arm on its own traffic, slates from the candidates, the
oracle on top and random below, and the off-policy gate."""

from __future__ import annotations

import polars as pl
import pytest

from reloop_cli.evaluation.policies import Policy
from reloop_cli.experiments.closed_loop import ClosedLoopConfig, run_closed_loop
from reloop_cli.store.workspace import Workspace

SMALL = ClosedLoopConfig(days=3, requests=400, candidates=8, policy=Policy(slots=3))


def served(ws: Workspace, arm: str, world: int = 0) -> pl.DataFrame:
    arm_ws = ws.closed_loop_arm(world, arm)
    return arm_ws.scan_logs(arm_ws.days()).collect()


def slates(ws: Workspace, arm: str, day: str) -> pl.DataFrame:
    arm_ws = ws.closed_loop_arm(0, arm)
    return pl.read_parquet(arm_ws.slate_dir(day) / "*.parquet")


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory):
    from reloop_cli.spec.pipeline import load_spec
    from tests.helpers import REPO

    spec = (
        load_spec(REPO / "pipelines" / "sample.toml")
        .override("model", embedding_dim=8, hidden_units=(16,))
        .override("train", epochs=2, batch_size=256, learning_rate=0.01)
    )
    runs = []
    for name in ("first", "second"):
        ws = Workspace(tmp_path_factory.mktemp(name) / "ws")
        runs.append((ws, run_closed_loop(ws, spec, ["bce", "kd"], SMALL)))
    return spec, runs


@pytest.mark.slow
def test_the_same_seed_gives_the_same_run_bit_for_bit(paired_run):
    _, ((first_ws, first), (second_ws, second)) = paired_run
    assert first.to_dict() == second.to_dict()
    for arm in ("bce", "kd"):
        assert served(first_ws, arm).equals(served(second_ws, arm))


def test_shown_items_are_the_requests_candidates_with_their_propensities(paired_run):
    _, ((ws, result), _) = paired_run
    for arm in ("bce", "kd"):
        logs = served(ws, arm)
        assert logs["propensity"].is_between(0, 1, closed="right").all()
        assert logs["propensity"].min() > 0
        for day in result.days:
            shown = logs.filter(pl.col("day") == day).select("request_id", "item_id", "position")
            slate = slates(ws, arm, day).filter(pl.col("slot").is_not_null())
            matched = shown.join(
                slate.select(
                    "request_id", "item_id", pl.col("slot").cast(pl.String).alias("position")
                ),
                on=["request_id", "item_id", "position"],
            )
            assert matched.height == shown.height == 400 * 3


def test_the_oracle_tops_every_arm_and_random_trails_trained_arms(paired_run):
    _, ((_, result), _) = paired_run
    for index in range(len(result.days)):
        oracle = result.online["oracle"][index]["expected_ctr"]
        assert all(result.online[arm][index]["expected_ctr"] <= oracle for arm in result.arms)
    last = -1
    random = result.online["random"][last]["expected_ctr"]
    assert all(result.online[arm][last]["expected_ctr"] > random for arm in result.arms)
    assert result.online["bce"][1]["regret"] > 0
    assert "ope_error" in result.online["kd"][1] and "auc" in result.online["kd"][1]


def test_ab_mode_gives_each_arm_only_its_own_requests(tmp_path, paired_run):
    spec, _ = paired_run
    ws = Workspace(tmp_path / "ws")
    run_closed_loop(
        ws, spec, ["bce", "kd"], ClosedLoopConfig(**{**SMALL.__dict__, "mode": "ab", "days": 1})
    )
    bce, kd = (set(served(ws, arm)["request_id"]) for arm in ("bce", "kd"))
    assert not bce & kd  # no request served twice
    assert len(bce) + len(kd) == 2 * 400  # every request of the two days served once


def test_the_off_policy_gate_decides_promotion(tmp_path, paired_run):
    spec, _ = paired_run
    strict = spec.override("gate", metric="snips_ctr", max_ctr_drop=0.0, confidence=0.5)
    ws = Workspace(tmp_path / "ws")
    result = run_closed_loop(ws, strict, ["kd"], ClosedLoopConfig(**{**SMALL.__dict__, "days": 2}))
    gated = result.online["kd"][1]["gate"]
    assert gated["outcome"] in ("passed", "refused")
    kept = result.online["kd"][2]["version"] == result.online["kd"][1]["version"]
    assert kept == (gated["outcome"] == "refused")


def test_the_cron_gate_can_judge_a_candidate_off_policy_on_logged_slates(paired_run):
    from reloop_cli.evaluation.slates import LoggedDay
    from reloop_cli.evaluation.statistics import Estimate
    from reloop_cli.experiments.closed_loop import serving_spec
    from reloop_cli.operations.gate import judge_offpolicy, run_gate
    from reloop_cli.store.registry import Registry

    spec, ((ws, result), _) = paired_run
    rules = serving_spec(spec).override("gate", metric="snips_ctr", min_clicks=0)
    arm = ws.closed_loop_arm(0, "kd")
    day = result.days[2]  # served by the version trained on day 1; the next one is the candidate
    live, candidate = result.online["kd"][2]["version"], result.online["kd"][3]["version"]
    with Registry(arm) as registry:
        gate = run_gate(arm, registry, rules, candidate, live, day, force=False)
    estimate = Estimate(**gate.offpolicy["candidate"]["snips_ctr"])
    observed = Estimate(**gate.offpolicy["live_observed_ctr"])
    assert gate.passed == judge_offpolicy(estimate, observed, rules.gate).passed
    held = gate.offpolicy["candidate"]["requests"]
    assert 0 < held < 400  # the holdout slice of requests, not the whole day
    full = LoggedDay(arm, day)
    assert full.requests == 400 and full.observed().value == pytest.approx(
        served(ws, "kd").filter(pl.col("day") == day)["label"].mean()
    )
