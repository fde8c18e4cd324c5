"""The nightly decision on a stage's evidence: a broken split blocks every decision, a worse
candidate is rolled back, a ramp waits for its nights, the last share promotes, shadow hands on
to the canary, an A/A test decides nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from reloop_cli.operations.experiment_evidence import decide, evidence
from reloop_cli.spec.experiment import ExperimentSpec
from reloop_cli.store.experiments import Experiment

SETTINGS = ExperimentSpec(mode="canary", shares=(0.05, 0.5), min_units=20, planned_units=2_000)


def running(**fields) -> Experiment:
    base = Experiment(
        id="e1",
        chain="main",
        candidate=2,
        live=1,
        mode="canary",
        stage=2,
        share=0.5,
        stage_looks=1,
        looks=2,
        status="running",
        started="2024-01-01T00:00:00+00:00",
        ended=None,
        settings=dataclasses.asdict(SETTINGS),
    )
    return dataclasses.replace(base, **fields)


def rows(
    candidate_units: int, live_units: int, candidate_ctr: float, seed: int = 0
) -> pl.DataFrame:
    """Ten impressions per unit, clicks drawn at each arm's rate (live 0.2)."""
    rng = np.random.default_rng(seed)
    arms = ["candidate"] * candidate_units + ["live"] * live_units
    frame = []
    for unit, arm in enumerate(arms):
        rate = candidate_ctr if arm == "candidate" else 0.2
        for i in range(10):
            frame.append((arm, f"u{unit}", f"r{unit}-{i}", int(rng.random() < rate)))
    return pl.DataFrame(
        frame, schema=["experiment_arm", "experiment_unit", "request_id", "click"], orient="row"
    )


def verdict(experiment: Experiment, frame: pl.DataFrame) -> tuple[str, str]:
    return decide(experiment, SETTINGS, evidence(frame, "click", experiment, SETTINGS))


def test_a_broken_split_blocks_even_a_clear_rollback():
    frame = rows(candidate_units=700, live_units=400, candidate_ctr=0.05)  # 64% at a 50% share
    decision, why = verdict(running(), frame)
    assert decision == "blocked" and "sample-ratio mismatch" in why
    sound = rows(candidate_units=500, live_units=500, candidate_ctr=0.05)
    assert verdict(running(), sound)[0] == "rollback"


def test_the_last_share_promotes_and_an_earlier_one_ramps_after_its_nights():
    better = rows(500, 500, candidate_ctr=0.3)
    assert verdict(running(), better)[0] == "promote"
    first = running(stage=1, share=0.05, stage_looks=1)
    small = rows(50, 950, candidate_ctr=0.3)
    assert verdict(first, small)[0] == "ramp"  # no promotion before the last share
    waiting = dataclasses.replace(first, stage_looks=0)
    assert verdict(waiting, small)[0] == "continue"


def test_too_few_units_wait_and_the_last_night_ends_inconclusive():
    assert verdict(running(), rows(5, 5, candidate_ctr=0.2))[0] == "waiting"
    equal = rows(500, 500, candidate_ctr=0.2, seed=4)
    assert verdict(running(looks=SETTINGS.max_nights), equal)[0] == "inconclusive"


def test_an_aa_test_never_promotes_or_rolls_back():
    aa = running(mode="aa", stage=1, share=0.5, candidate=1)
    assert verdict(aa, rows(500, 500, candidate_ctr=0.2, seed=2))[0] == "continue"
    differ = verdict(aa, rows(500, 500, candidate_ctr=0.05))
    assert differ[0] == "blocked" and "A/A" in differ[1]


def test_shadow_hands_on_to_the_first_share_unless_worse_on_the_served_rows():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.05, 0.5, 4_000)
    clicks = (rng.random(truth.size) < truth).astype(int)
    served = pl.DataFrame(
        {
            "experiment_arm": ["live"] * truth.size,
            "experiment_unit": [f"u{i}" for i in range(truth.size)],
            "request_id": [f"r{i}" for i in range(truth.size)],
            "click": clicks,
            "served_pctr": truth,
        }
    )
    shadow = running(mode="shadow", stage=0, share=1.0, stage_looks=1)
    good = served.with_columns(shadow_pctr=pl.Series(np.clip(truth * 1.02, 0, 1)))
    bad = served.with_columns(shadow_pctr=pl.Series(rng.uniform(0.05, 0.5, truth.size)))
    assert verdict(shadow, good)[0] == "canary"
    assert verdict(shadow, bad)[0] == "rollback"
