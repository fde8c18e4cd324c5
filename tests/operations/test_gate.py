"""The gate decides on intervals: inconclusive below gate.min_clicks, non-inferiority above."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.errors import EXIT_INCONCLUSIVE
from reloop_cli.evaluation.metrics import DayMetrics
from reloop_cli.evaluation.statistics import Estimate, Paired
from reloop_cli.operations.gate import GateOutcome, judge
from reloop_cli.spec.sections import GateSpec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from tests.helpers import Feed, write_spec

GATE = GateSpec(max_auc_drop=0.002, max_logloss_rise=0.005, min_clicks=100)
NAN = float("nan")


def holdout(auc: float = 0.75, logloss: float = 0.30, clicks: int = 500) -> DayMetrics:
    """A version's holdout metrics with what the gate reads set (the rest not known)."""
    return DayMetrics(auc, NAN, NAN, NAN, logloss, NAN, NAN, NAN, 5_000, clicks, NAN, NAN, NAN, NAN)


METRICS = holdout()
PASSED, REFUSED, INCONCLUSIVE = GateOutcome.PASSED, GateOutcome.REFUSED, GateOutcome.INCONCLUSIVE


def difference(auc_low, auc_high, logloss_low=-0.001, logloss_high=0.001) -> Paired:
    auc = Estimate((auc_low + auc_high) / 2, 0.001, auc_low, auc_high, 0.5)
    logloss = Estimate((logloss_low + logloss_high) / 2, 0.001, logloss_low, logloss_high, 0.5)
    return Paired(auc, logloss, rows=5_000, clicks=500)


@pytest.mark.parametrize(
    "auc_low,auc_high,logloss_high,outcome",
    [
        (-0.0019, 0.003, 0.001, PASSED),  # may be a little worse, not by more than the margin
        (0.001, 0.004, 0.001, PASSED),  # better
        (-0.0021, 0.003, 0.001, REFUSED),  # may be worse by more than 0.002 AUC
        (-0.004, -0.001, 0.001, REFUSED),  # surely worse
        (-0.001, 0.002, 0.0049, PASSED),  # Logloss may rise, by less than 0.005
        (-0.001, 0.002, 0.0051, REFUSED),  # Logloss may rise by more than 0.005
    ],
)
def test_non_inferiority_on_both_sides_of_the_margins(auc_low, auc_high, logloss_high, outcome):
    decision = judge(METRICS, METRICS, difference(auc_low, auc_high, -0.002, logloss_high), GATE)
    assert decision.outcome == outcome
    if outcome == REFUSED:
        assert "may be more than gate.max_" in decision.reasons[0]


def test_a_better_point_estimate_with_a_wide_interval_is_refused():
    """The old rule compared point estimates; a noisy +0.03 now proves nothing."""
    decision = judge(METRICS, METRICS, difference(-0.026, 0.088), GATE)
    assert decision.outcome == REFUSED


def test_too_few_clicks_is_inconclusive_whatever_the_metrics():
    few = holdout(clicks=99)
    decision = judge(few, METRICS, difference(0.01, 0.02), GATE)
    assert decision.outcome == INCONCLUSIVE
    assert decision.reasons == [
        "the holdout has 99 clicks, fewer than gate.min_clicks 100: too few to judge"
    ]
    assert judge(few, None, None, GATE).outcome == INCONCLUSIVE  # a first version too


def test_first_version_is_held_to_the_floors():
    assert judge(METRICS, None, None, GATE).outcome == PASSED
    low = holdout(auc=0.5)
    assert judge(low, None, None, GATE).reasons == ["AUC 0.5000 < min_auc 0.55"]


@pytest.mark.slow
def test_an_inconclusive_cycle_exits_with_its_code_and_promotes_nothing(tmp_path, tiny_logs):
    ws, feed = tmp_path / "ws", Feed(tiny_logs, tmp_path / "drop")
    runner = CliRunner()

    def cycle(spec, *extra):
        return runner.invoke(
            app, ["run", "--spec", str(spec), "--logs", str(feed.folder), "-w", str(ws), *extra]
        )

    feed.arrive(2)
    assert cycle(write_spec(tmp_path, "spec")).exit_code == 0
    strict = tmp_path / "strict.toml"
    strict.write_text(
        write_spec(tmp_path, "base").read_text().replace("min_clicks = 20", "min_clicks = 10000")
    )
    feed.arrive(3)
    result = cycle(strict)
    assert result.exit_code == EXIT_INCONCLUSIVE, result.output
    assert "inconclusive, live keeps serving: the holdout has" in result.output
    with Registry(Workspace(ws)) as registry:
        assert registry.live("main") == 1
        assert [(v["version"], v["status"]) for v in registry.versions("main")] == [
            (1, "live"),
            (2, "inconclusive"),
        ]
        assert registry.runs(1)[0]["outcome"] == "inconclusive"
    again = cycle(strict, "--json")  # the day was decided: nothing new, nothing promoted
    assert again.exit_code == 0 and json.loads(again.stdout)["outcome"] == "nothing-new"


@pytest.mark.slow
def test_a_cycle_prints_the_difference_with_its_interval(tmp_path, tiny_logs):
    ws, feed = tmp_path / "ws", Feed(tiny_logs, tmp_path / "drop")
    spec = write_spec(tmp_path, "spec")
    runner = CliRunner()
    feed.arrive(2)
    assert (
        runner.invoke(
            app, ["run", "--spec", str(spec), "--logs", str(feed.folder), "-w", str(ws)]
        ).exit_code
        == 0
    )
    feed.arrive(3)
    result = runner.invoke(
        app, ["run", "--spec", str(spec), "--logs", str(feed.folder), "-w", str(ws), "--json"]
    )
    gate = json.loads(result.stdout)["gate"]
    auc = gate["difference"]["auc"]
    assert auc["low"] < auc["value"] < auc["high"] and 0 <= auc["p_value"] <= 1
    assert gate["rule"] == {
        "max_auc_drop": 0.1,
        "max_logloss_rise": 0.1,
        "confidence": 0.95,
        "min_clicks": 20,
        "metric": "auc",
        "holdout_split": "fnv1a64-splitmix64-v1",
    }
