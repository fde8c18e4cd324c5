"""The stages wired together: train, the ỹ_last join, score, eval, simulate."""

from __future__ import annotations

import polars as pl
import pytest

from reloop_cli.columns import IMPRESSION_ID, Y_LAST
from reloop_cli.data.ingest import ingest
from reloop_cli.evaluation.evaluate import evaluate_day
from reloop_cli.experiments.simulate import simulate
from reloop_cli.store.registry import Registry
from reloop_cli.training.train import Lineage, train_version
from reloop_cli.training.window import training_rows
from reloop_cli.versions.score import score_day


@pytest.fixture()
def loaded(ws, tiny_logs, sample_spec):
    ingest(ws, sample_spec, tiny_logs)
    return ws


@pytest.mark.slow
def test_first_version_trains_with_bce_and_becomes_live(loaded, sample_spec):
    with Registry(loaded) as registry:
        result = train_version(loaded, registry, sample_spec, "2024-01-02")
        assert (result.version, result.parent, result.loss) == (1, None, "bce")
        assert result.window == ["2024-01-01", "2024-01-02"]
        assert registry.live("main") == 1
        assert (loaded.model_dir(1) / "weights.pt").exists()


@pytest.mark.slow
def test_y_last_join_neither_duplicates_nor_drops_rows(loaded, sample_spec):
    with Registry(loaded) as registry:
        parent = train_version(loaded, registry, sample_spec, "2024-01-02").version
        window = ["2024-01-02", "2024-01-03"]
        # The parent has scores only for some rows of day 3: drop a third of its scores.
        score_day(loaded, parent, "2024-01-03")
        path = loaded.score_dir(parent, "2024-01-03") / "part-0.parquet"
        scores = pl.read_parquet(path)
        kept = scores.slice(1000)
        pl.concat([kept, kept.head(100)]).write_parquet(path)  # and 100 duplicated ids
        rows = training_rows(loaded, registry, sample_spec, window, parent, "reloop").collect()
        plain = loaded.scan_logs(window).collect()
        assert rows.height == plain.height
        assert rows[IMPRESSION_ID].to_list() == plain[IMPRESSION_ID].to_list()
        assert rows[Y_LAST].null_count() == 1000

        result = train_version(loaded, registry, sample_spec, "2024-01-03", Lineage(parent=parent))
        assert result.rows_without_last == 1000
        assert result.loss == "reloop"


@pytest.mark.slow
def test_score_and_eval_next_day(loaded, sample_spec):
    with Registry(loaded) as registry:
        version = train_version(loaded, registry, sample_spec, "2024-01-02").version
        scored = score_day(loaded, version, "2024-01-03")
        assert scored.rows == 3_000 and not scored.reused
        assert score_day(loaded, version, "2024-01-03").reused
        result = evaluate_day(loaded, registry, version, "2024-01-03")
        assert result.metrics.rows == 3_000
        assert 0.6 < result.metrics.auc <= result.oracle["auc"] + 0.02
        assert 0 < result.metrics.mean_pctr < 1


@pytest.mark.slow
def test_simulate_runs_each_arm_on_its_own_chain(loaded, sample_spec):
    with Registry(loaded) as registry:
        result = simulate(loaded, registry, sample_spec, 3, ["bce", "reloop"])
        assert result.days == ["2024-01-02", "2024-01-03", "2024-01-04"]
        bce, reloop = result.arms["bce"], result.arms["reloop"]
        # Day 1 is served by the shared first version; later days by each arm's own versions.
        assert bce.days[0]["version"] == reloop.days[0]["version"]
        assert bce.days[1]["version"] != reloop.days[1]["version"]
        lineage = registry.version_meta(reloop.days[2]["version"])
        assert lineage["loss"] == "reloop" and lineage["parent"] == reloop.days[1]["version"]
        assert all(day["auc"] > 0.6 for arm in result.arms.values() for day in arm.days)
        assert len(result.oracle) == 3


@pytest.mark.slow
def test_training_is_reproducible_with_the_same_seed(loaded, sample_spec):
    import torch

    with Registry(loaded) as registry:
        a = train_version(
            loaded, registry, sample_spec, "2024-01-02", Lineage(use_live_parent=False)
        )
        b = train_version(
            loaded, registry, sample_spec, "2024-01-02", Lineage(use_live_parent=False)
        )
    wa = torch.load(loaded.model_dir(a.version) / "weights.pt", weights_only=True)
    wb = torch.load(loaded.model_dir(b.version) / "weights.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.version != b.version  # a rerun never overwrites a version


@pytest.mark.slow
def test_warm_start_child_starts_from_parent(loaded, sample_spec):
    spec = sample_spec.override("train", warm_start=True)
    with Registry(loaded) as registry:
        parent = train_version(loaded, registry, spec, "2024-01-02").version
        child = train_version(loaded, registry, spec, "2024-01-03")
        assert child.warm_start and child.parent == parent


@pytest.mark.slow
def test_served_source_uses_what_each_days_live_version_predicted(loaded, sample_spec):
    spec = sample_spec.override("train", last_source="served")
    with Registry(loaded) as registry:
        v1 = train_version(loaded, registry, spec, "2024-01-02").version
        score_day(loaded, v1, "2024-01-03")  # v1 serves day 3
        registry.record_served("main", "2024-01-03", v1)
        rows = training_rows(
            loaded, registry, spec, ["2024-01-02", "2024-01-03"], v1, "reloop", "main"
        ).collect()
        served = loaded.scan_scores(v1, "2024-01-03").collect()
        day3 = rows.filter(pl.col("day") == "2024-01-03")
        assert day3[Y_LAST].to_list() == pytest.approx(served["pctr"].to_list())
        # nobody served day 2 in this chain: those rows train with plain BCE
        assert rows.filter(pl.col("day") == "2024-01-02")[Y_LAST].null_count() == 3_000


@pytest.mark.slow
def test_y_last_placed_by_position_equals_the_join_on_ids(loaded, sample_spec):
    from reloop_cli.training.window import attach_last

    with Registry(loaded) as registry:
        version = train_version(loaded, registry, sample_spec, "2024-01-02").version
    score_day(loaded, version, "2024-01-03")
    rows = loaded.scan_logs(["2024-01-03"])
    scores = loaded.scan_scores(version, "2024-01-03")
    aligned = attach_last(rows, scores).collect()  # same order as the logs: placed by position
    shuffled = attach_last(rows, scores.collect().sample(fraction=1.0, seed=1).lazy()).collect()
    assert aligned.equals(shuffled)  # the join on ids gives the very same frame
    expected = dict(zip(*scores.collect().get_columns(), strict=True))
    got = dict(zip(aligned[IMPRESSION_ID], aligned[Y_LAST], strict=True))
    assert got == pytest.approx(expected)
