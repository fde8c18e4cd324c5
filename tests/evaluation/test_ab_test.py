"""The online test's statistics: the confidence sequence keeps its level when looked at every
night for a month, decides a planted difference the right way, and the delta-method interval
over users is the one impressions-as-independent would understate."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from reloop_cli.evaluation.ab_test import arm_figures, lift, per_unit, sample_ratio

NIGHTS = 30


def month(seed: int, effect: float, new_users: int = 80) -> list[pl.DataFrame]:
    """Nightly cumulative per-user tables of a seeded experiment at a 50% share: users arrive
    every night and come back; each has their own click rate (Beta(2, 30)); the candidate
    multiplies it by 1 + effect."""
    rng = np.random.default_rng(seed)
    arms, rates = np.empty(0, dtype="<U9"), np.empty(0)
    impressions, clicks = np.empty(0), np.empty(0)
    tables = []
    for _ in range(NIGHTS):
        arms = np.concatenate([arms, np.where(rng.random(new_users) < 0.5, "candidate", "live")])
        rates = np.concatenate([rates, rng.beta(2, 30, new_users)])
        impressions = np.concatenate([impressions, np.zeros(new_users)])
        clicks = np.concatenate([clicks, np.zeros(new_users)])
        shown = rng.poisson(3, arms.size)
        rate = np.minimum(np.where(arms == "candidate", rates * (1 + effect), rates), 1.0)
        impressions += shown
        clicks += rng.binomial(shown, rate)
        seen = impressions > 0
        tables.append(
            pl.DataFrame(
                {
                    "experiment_arm": arms[seen],
                    "experiment_unit": np.arange(arms.size)[seen].astype(str),
                    "impressions": impressions[seen],
                    "clicks": clicks[seen],
                    "requests": impressions[seen],
                }
            )
        )
    return tables


def first_exclusion(tables: list[pl.DataFrame], fixed: bool = False) -> tuple[int, float] | None:
    """(night, lift) of the first night whose interval excludes 0, looking every night."""
    for night, units in enumerate(tables, start=1):
        found = lift(units, 0.05, 5_000)
        if found is None:
            continue
        low, high = (
            (found.fixed_low, found.fixed_high)
            if fixed
            else (found.sequence_low, found.sequence_high)
        )
        if low > 0 or high < 0:
            return night, found.value
    return None


def test_a_month_of_nightly_looks_at_aa_tests_stays_under_the_level():
    runs = [first_exclusion(month(seed, 0.0)) for seed in range(120)]
    false_positives = sum(r is not None for r in runs)
    assert false_positives / len(runs) <= 0.05
    # the same looks through the fixed-sample interval reject far more often: peeking bias
    peeking = sum(first_exclusion(month(seed, 0.0), fixed=True) is not None for seed in range(120))
    assert peeking > false_positives


@pytest.mark.parametrize("effect", [-0.25, 0.25])
def test_a_planted_difference_is_decided_in_its_direction(effect):
    found = [first_exclusion(month(seed, effect)) for seed in range(10)]
    assert all(f is not None for f in found)
    assert all(np.sign(value) == np.sign(effect) for _, value in found)


def test_the_interval_is_over_users_not_impressions():
    # ten heavy users of very different rates: the spread between users, not the binomial
    # spread of impressions, sets the standard error
    rng = np.random.default_rng(3)
    arms = np.array(["live", "candidate"] * 10)
    impressions = np.full(20, 1_000.0)
    clicks = rng.binomial(1_000, np.tile(rng.uniform(0.01, 0.3, 10), 2)).astype(float)
    units = pl.DataFrame(
        {
            "experiment_arm": arms,
            "experiment_unit": np.arange(20).astype(str),
            "impressions": impressions,
            "clicks": clicks,
            "requests": impressions,
        }
    )
    live = arm_figures(units, "live")
    binomial_se = np.sqrt(live.ctr * (1 - live.ctr) / live.impressions)
    assert live.ctr_se > 3 * binomial_se
    # the delta method's ratio variance, counted independently
    part = units.filter(pl.col("experiment_arm") == "live")
    c, n = part["clicks"].to_numpy(), part["impressions"].to_numpy()
    r = c.sum() / n.sum()
    by_hand = np.sqrt(np.var(c - r * n, ddof=1) / (c.size * n.mean() ** 2))
    assert live.ctr_se == pytest.approx(by_hand, rel=1e-9)


def test_per_unit_counts_impressions_clicks_and_requests():
    rows = pl.DataFrame(
        {
            "experiment_arm": ["live", "live", "live", "candidate"],
            "experiment_unit": ["u1", "u1", "u2", "u3"],
            "request_id": ["r1", "r1", "r2", "r3"],
            "click": [1, 0, 0, 1],
        }
    )
    units = per_unit(rows, "click").sort("experiment_unit")
    assert units["impressions"].to_list() == [2, 1, 1]
    assert units["clicks"].to_list() == [1.0, 0.0, 1.0]
    assert units["requests"].to_list() == [1, 1, 1]


def test_a_broken_split_is_flagged_and_a_sound_one_is_not():
    assert sample_ratio(5_000, 5_000, 0.5, 0.001).broken is False
    broken = sample_ratio(5_000, 5_400, 0.5, 0.001)
    assert broken.broken and broken.p_value < 0.001
    assert sample_ratio(9_500, 500, 0.05, 0.001).broken is False


def test_the_lift_per_request_divides_clicks_by_requests():
    units = pl.DataFrame(
        {
            "experiment_arm": ["live"] * 3 + ["candidate"] * 3,
            "experiment_unit": [f"u{i}" for i in range(6)],
            "impressions": [10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
            "requests": [5.0, 5.0, 5.0, 2.0, 2.0, 2.0],
            "clicks": [2.0, 3.0, 1.0, 2.0, 3.0, 1.0],
        }
    )
    assert lift(units, 0.05, 100).value == pytest.approx(0.0)
    assert lift(units, 0.05, 100, per="requests").value == pytest.approx(5 / 2 - 1)
