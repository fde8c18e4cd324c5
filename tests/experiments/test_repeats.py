"""simulate compares each arm with bce on the same rows; repeats differ only in their seed."""

from __future__ import annotations

import numpy as np
import pytest

from reloop_cli.data.ingest import ingest
from reloop_cli.evaluation.compare import scores_side_by_side
from reloop_cli.evaluation.statistics import paired
from reloop_cli.experiments.repeats import simulate_repeats
from reloop_cli.experiments.simulate import simulate
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace


def metrics_only(result) -> list:
    """A repeat's figures, without what the machine measures and differs from run to run: the
    wall-clock seconds and the process's peak memory (a peak set by whatever ran before)."""
    return [
        [{k: v for k, v in day.items() if k not in ("seconds", "peak_rss_mib")} for day in arm.days]
        for arm in result.arms.values()
    ] + [c.to_dict() for c in result.comparisons.values()]


@pytest.mark.slow
def test_each_arm_is_compared_with_bce_on_the_rows_both_served(ws, tiny_logs, sample_spec):
    ingest(ws, sample_spec, tiny_logs)
    with Registry(ws) as registry:
        result = simulate(ws, registry, sample_spec, 3, ["bce", "kd"])
    comparison = result.comparisons["kd"]
    assert [d["day"] for d in comparison.days] == result.days
    first = comparison.days[0]["auc"]  # day 1: both arms served by the shared first version
    assert (first.value, first.se, first.p_value) == (0.0, 0.0, 1.0)
    day = result.days[-1]
    versions = {arm: result.arms[arm].days[-1]["version"] for arm in ("bce", "kd")}
    frame = scores_side_by_side(ws, versions, day)
    as_float = {c: frame[c].cast(float).to_numpy() for c in ("label", "bce", "kd")}
    expected = paired(as_float["label"], as_float["bce"], as_float["kd"]).auc
    got = comparison.days[-1]["auc"]
    assert (got.value, got.se, got.p_value) == pytest.approx(
        (expected.value, expected.se, expected.p_value), rel=1e-9
    )
    values = [d["auc"].value for d in comparison.days]
    assert comparison.auc.value == pytest.approx(np.mean(values))
    assert "comparisons" in result.to_dict() and "verdict" in result.to_dict()["comparisons"]["kd"]


@pytest.mark.slow
def test_seed_repeats_are_reproducible_and_differ_only_in_their_seed(
    tmp_path, tiny_logs, sample_spec
):
    runs = []
    for name in ("first", "second"):
        ws = Workspace(tmp_path / name)
        ingest(ws, sample_spec, tiny_logs[:3])
        with ws.lock():
            runs.append(simulate_repeats(ws, sample_spec, 2, ["bce", "reloop"], seeds=2))
    first, second = runs
    assert [metrics_only(r) for r in first.repeats] == [metrics_only(r) for r in second.repeats]
    assert [r.seed for r in first.repeats] == [0, 1]
    assert metrics_only(first.repeats[0]) != metrics_only(first.repeats[1])
    with Registry(Workspace(tmp_path / "first")) as registry:
        by_seed = {}
        for version in registry.versions():
            meta = version["meta"]
            assert version["chain"].startswith(f"simulate-s{meta['seed']}-")
            spec = {**meta["spec"], "train": {**meta["spec"]["train"], "seed": None}}
            by_seed.setdefault(meta["seed"], []).append((version["chain"][12:], spec))
    assert by_seed[0] == by_seed[1]  # same chains, same settings, except the seed
    summary = first.summary()
    assert summary["reloop"]["lift_auc"].value == pytest.approx(
        np.mean([r.comparisons["reloop"].auc.value for r in first.repeats])
    )
    assert sum(summary["reloop"]["repeats_auc"].values()) == 2


def test_world_repeats_simulate_each_world_in_its_own_workspace(tmp_path, sample_spec):
    ws = Workspace(tmp_path / "ws")
    with ws.lock():
        result = simulate_repeats(
            ws, sample_spec, 1, ["bce", "kd"], seeds=1, worlds=[0, 1], rows_per_day=1_500
        )
    assert [(r.world, r.seed) for r in result.repeats] == [(0, 0), (1, 0)]
    for world in (0, 1):
        assert ws.world(world).days() == ["2024-01-01", "2024-01-02"]
    first_world, second_world = (r.arms["bce"].days[0]["auc"] for r in result.repeats)
    assert first_world != second_world
    assert ws.days() == []  # the worlds' logs stay in their own workspaces
