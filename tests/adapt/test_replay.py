"""`reloop replay`: a day as serving saw it, slot by slot, judged against the unadapted version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.data.ingest import ingest
from reloop_cli.experiments.replay import (
    ReplayRequest,
    build_adapters,
    labels_arrived,
    load_day,
    replay_day,
    replay_predictions,
)
from reloop_cli.experiments.synth import SynthConfig, synthesize
from reloop_cli.operations.report import build_report
from reloop_cli.spec.adapt import ADAPTERS
from reloop_cli.store.registry import Registry
from reloop_cli.training.train import train_version
from reloop_cli.versions.checkpoint import load_version
from tests.helpers import REPO

DAY = "2024-01-03"
runner = CliRunner()


@pytest.fixture(scope="module")
def drifting_logs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three simulated days with a trend and a base-rate shift within each day."""
    config = SynthConfig(
        days=3,
        rows_per_day=3_000,
        seed=11,
        users=150,
        initial_items=120,
        new_items_per_day=15,
        intraday_trend=1.0,
        intraday_base_shift=0.5,
    )
    return synthesize(config, tmp_path_factory.mktemp("intraday"))


@pytest.fixture()
def served(ws, drifting_logs, sample_spec):
    """A version trained on the first two days, to replay the third."""
    spec = sample_spec.override("adapt", memory_bits=6, memory_arrays=16, intercept_window_rows=500)
    ingest(ws, spec, drifting_logs)
    with Registry(ws) as registry:
        version = train_version(ws, registry, spec, "2024-01-02").version
    return ws, spec, version


def predictions(ws, spec, version, labels=None, slots=6, delay=3_600.0):
    request = ReplayRequest(version, DAY, slots=slots, label_delay_seconds=delay)
    loaded = load_version(ws, version)
    day = load_day(ws, loaded, spec, request)
    if labels is not None:
        day.labels = labels(day)
    adapters = build_adapters(spec, loaded, day, ADAPTERS, seed=0)
    return day, replay_predictions(day, adapters, delay)


@pytest.mark.slow
def test_a_slot_prediction_never_reads_its_own_or_a_later_slot_labels(served):
    ws, spec, version = served
    cut = 3  # slots 3..5 get their labels flipped
    day, honest = predictions(ws, spec, version)

    def flipped(day):
        labels = day.labels.copy()
        labels[day.slot >= cut] = 1 - labels[day.slot >= cut]
        return labels

    _, altered = predictions(ws, spec, version, labels=flipped)
    assert np.bincount(day.slot, minlength=6).min() > 100  # the day is spread over the slots
    upto = day.slot <= cut
    for name in ADAPTERS:
        assert np.array_equal(honest[name][upto], altered[name][upto]), name
        # the first slot is predicted before any label has arrived: every adapter is the base
        assert np.array_equal(honest[name][day.slot == 0], honest["base"][day.slot == 0]), name
    # ...and the check can fail: the flipped labels do reach every learning adapter later
    for name in ADAPTERS[1:]:
        assert not np.array_equal(honest[name][~upto], altered[name][~upto]), name


@pytest.mark.slow
def test_intercept_keeps_every_slot_auc_and_the_replay_repeats_bit_for_bit(served):
    ws, spec, version = served
    request = ReplayRequest(version, DAY, slots=6, adapters=("intercept", "reloop2"))
    first = replay_day(ws, spec, request).to_dict()
    second = replay_day(ws, spec, request).to_dict()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    moved = 0
    for slot in first["slots"]:
        if slot["rows"] == 0 or slot["base"]["clicks"] in (0, slot["rows"]):
            continue
        base, shifted = slot["base"], slot["intercept"]
        assert shifted["auc"]["value"] == pytest.approx(base["auc"]["value"], abs=1e-9)
        moved += shifted["calibration"] != pytest.approx(base["calibration"], abs=1e-9)
    assert moved >= 3  # it did recalibrate: the calibration ratio changed where it had labels
    pooled = first["pooled"]
    assert set(pooled) == {"base", "intercept", "reloop2"}
    assert pooled["reloop2"]["vs_base"]["auc"]["low"] <= pooled["reloop2"]["vs_base"]["auc"]["high"]
    assert first["memory_bytes"]["base"] == 0 and first["memory_bytes"]["reloop2"] > 0


@pytest.mark.slow
def test_the_pooled_figures_are_the_metrics_of_the_predictions(served):
    ws, spec, version = served
    day, predicted = predictions(ws, spec, version)
    result = replay_day(ws, spec, ReplayRequest(version, DAY, slots=6)).to_dict()
    for name in ADAPTERS:
        assert result["pooled"][name]["auc"]["value"] == pytest.approx(
            roc_auc_score(day.labels, predicted[name]), abs=1e-9
        )
        assert result["pooled"][name]["calibration"] == pytest.approx(
            predicted[name].sum() / day.labels.sum()
        )


@pytest.mark.slow
def test_replay_command_writes_its_report_and_refuses_a_bad_delay(served):
    ws, _, version = served
    args = ["replay", "-v", str(version), "--day", DAY, "-w", str(ws.root), "--slots", "4"]
    result = runner.invoke(app, [*args, "--adapters", "intercept,field_bias", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads((ws.reports / "replay.json").read_text())
    assert payload["request"]["adapters"] == ["intercept", "field_bias"]
    assert len(payload["slots"]) == 4
    page = build_report(ws)  # the report draws the replay, slot by slot
    assert "Replay: each adapter against the unadapted version" in page
    assert page.count("data:image/png;base64,") >= 2
    bad = runner.invoke(app, [*args, "--label-delay", "soon"])
    assert bad.exit_code != 0 and "--label-delay" in bad.output
    unknown = runner.invoke(app, [*args, "--adapters", "magic"])
    assert unknown.exit_code != 0 and "magic" in unknown.output
    later = runner.invoke(app, [*args, "--tune-day", DAY])
    assert later.exit_code != 0 and "--tune-day" in later.output


def test_intraday_drift_leaves_the_bundled_sample_as_it_was(tmp_path):
    """The intra-day option draws nothing when off: the bundled sample (and so every open-loop
    figure measured on it) regenerates byte for byte."""
    config = SynthConfig(days=2, rows_per_day=30_000, seed=0)
    for path in synthesize(config, tmp_path):
        assert pl.read_parquet(path).equals(pl.read_parquet(REPO / "sample_data" / path.name))


def test_a_label_arrives_after_its_delay_and_never_before_its_own_slot():
    shown = np.array([0.0, 10.0, 3_600.0, 3_600.0, 7_200.0])  # in time order
    assert labels_arrived(shown, 3_600.0, 3_600.0) == 1  # shown an hour or more before 01:00
    assert labels_arrived(shown, 3_600.0, 10.0) == 2  # shown by 00:59:50
    assert labels_arrived(shown, 3_600.0, 0.0) == 2  # no delay: still only those shown before
    assert labels_arrived(shown, 7_200.0, 0.0) == 4


def test_the_within_slot_headline_gives_a_per_slot_shift_exactly_nothing(served):
    """Intercept recalibration moves every prediction of a slot by one constant on the logit:
    the within-slot AUC difference is exactly 0, while the pooled one (which rewards tracking
    the base rate from hour to hour) is not."""
    ws, spec, version = served
    request = ReplayRequest(version, DAY, slots=6, adapters=("intercept",))
    result = replay_day(ws, spec, request)
    headline = result.within_slot["intercept"]
    assert headline["auc"]["value"] == 0.0 and headline["auc"]["se"] == 0.0
    assert headline["gauc"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert headline["slots_ranked"] == 6 and headline["slots_without_auc"] == 0
    pooled = result.pooled["intercept"]["vs_base"]["auc"]["value"]
    assert abs(pooled) > 1e-4  # the drift within the day let the pooled AUC move


def test_a_day_with_few_clicks_reports_slots_without_an_auc_and_writes_standard_json(served):
    """Reproduction: a real day with 43 clicks in 8,006 rows (most hourly slots without a click)
    was `internal error: ValueError: Out of range float values are not JSON compliant: inf`."""
    ws, spec, version = served
    runner_args = ["replay", "-v", str(version), "--day", DAY, "-w", str(ws.root)]
    loaded = load_version(ws, version)
    day = load_day(ws, loaded, spec, ReplayRequest(version, DAY, slots=24))
    keep = np.zeros(day.labels.size, bool)
    keep[np.flatnonzero(day.labels)[:12]] = True  # 12 clicks left in the day
    sparse = pl.read_parquet(ws.log_dir(DAY) / "*.parquet").sort("ts", "impression_id")
    sparse = sparse.with_columns(pl.Series("label", (day.labels * keep).astype(np.int8)))
    for part in ws.log_dir(DAY).glob("*.parquet"):
        part.unlink()
    sparse.write_parquet(ws.log_dir(DAY) / "part-0.parquet")
    result = runner.invoke(app, [*runner_args, "--adapters", "intercept,reloop2", "--json"])
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON: {constant}")

    payload = json.loads(result.stdout, parse_constant=refuse)  # no NaN, no Infinity
    headline = payload["within_slot"]["reloop2"]
    assert headline["slots_without_auc"] >= 12 and headline["slots_ranked"] >= 1
    assert headline["slots_ranked"] + headline["slots_without_auc"] == 24
    empty = [s for s in payload["slots"] if s["rows"] and s["base"]["auc"] is None]
    assert empty and all(s["reloop2"]["vs_base"]["auc"] is None for s in empty)
    table = runner.invoke(app, [*runner_args, "--adapters", "intercept,reloop2"])
    assert table.exit_code == 0 and "slots ranked" in table.output


@pytest.mark.slow
def test_every_adapter_is_tuned_alike_on_the_tune_day_alone(served):
    """Each adapter tries the same number of settings on the tune day and keeps the lowest
    Logloss; the choice is reproduced bit for bit, and the reported day never influences it
    (its labels flipped, the tuning is the same)."""
    from reloop_cli.experiments.tuning import GRIDS, tune_adapters

    ws, spec, version = served
    names = ("intercept", "field_bias", "reloop2", "incremental")
    request = ReplayRequest(version, "2024-01-02", slots=6, adapters=names)
    first = tune_adapters(ws, spec, request, budget=3)
    assert {name: len(trials) for name, trials in first.trials.items()} == dict.fromkeys(names, 3)
    for name, trials in first.trials.items():
        best = min(trials, key=lambda t: t["logloss"])
        assert first.chosen[name] == {key: best[key] for key in GRIDS[name]}
        for key, value in first.chosen[name].items():
            assert getattr(first.spec.adapt, key) == value
    reported = ws.log_dir(DAY)
    frame = pl.read_parquet(reported / "*.parquet")
    for part in reported.glob("*.parquet"):
        part.unlink()
    frame.with_columns(1 - pl.col("label")).write_parquet(reported / "flipped.parquet")
    again = tune_adapters(ws, spec, request, budget=3)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(
        first.to_dict(), sort_keys=True
    )


@pytest.mark.slow
def test_the_papers_protocol_never_lets_a_slice_read_its_own_or_later_labels(served):
    """Days 2-3 held out as one test set in 10 slices of equal rows, labels handed over as
    soon as a slice is predicted: a label flipped in slice k changes no prediction before k."""
    ws, spec, version = served
    request = ReplayRequest(version, "2024-01-02", slots=10, label_delay_seconds=0.0, through=DAY)
    loaded = load_version(ws, version)
    day = load_day(ws, loaded, spec, request)
    sizes = np.bincount(day.slot, minlength=10)
    assert sizes.max() - sizes.min() <= 1 and day.labels.size == sizes.sum() == 6_000
    assert np.all(np.diff(day.ts) >= 0) and np.all(np.diff(day.slot) >= 0)  # chronological
    honest = replay_predictions(day, build_adapters(spec, loaded, day, ADAPTERS, 0), 0.0)
    cut = 6
    flipped = day.labels.copy()
    flipped[day.slot >= cut] = 1 - flipped[day.slot >= cut]
    day.labels = flipped
    altered = replay_predictions(day, build_adapters(spec, loaded, day, ADAPTERS, 0), 0.0)
    before = day.slot < cut
    for name in ADAPTERS:
        assert np.array_equal(honest[name][before], altered[name][before]), name
    for name in ADAPTERS[1:]:  # and the flipped labels do reach the adapters afterwards
        assert not np.array_equal(honest[name][~before], altered[name][~before]), name
