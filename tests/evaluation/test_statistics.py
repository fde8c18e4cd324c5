"""Intervals and tests: DeLong against its definition and the bootstrap, coverage where the truth
is known, the paired test's false-positive rate, pooling and repeats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reloop_cli.evaluation.metrics import auc
from reloop_cli.evaluation.statistics import (
    Estimate,
    across_repeats,
    auc_estimate,
    delong,
    detectable_difference,
    format_interval,
    logloss_estimate,
    paired,
    pooled,
    proportion_estimate,
    two_sided_p,
    verdict,
)


def textbook_delong(label, scores):
    """DeLong et al. (1988) as written: psi over every positive-negative pair, O(n^2)."""
    label = np.asarray(label).astype(bool)
    k = len(scores)
    components_pos, components_neg, aucs = [], [], []
    for score in scores:
        x, y = score[label], score[~label]
        psi = (x[:, None] > y[None, :]).astype(float) + 0.5 * (x[:, None] == y[None, :])
        aucs.append(psi.mean())
        components_pos.append(psi.mean(axis=1))
        components_neg.append(psi.mean(axis=0))
    m, n = label.sum(), (~label).sum()
    s10 = np.cov(np.vstack(components_pos)) if k > 1 else np.var(components_pos[0], ddof=1)
    s01 = np.cov(np.vstack(components_neg)) if k > 1 else np.var(components_neg[0], ddof=1)
    return np.array(aucs), np.atleast_2d(s10 / m + s01 / n)


@pytest.mark.parametrize("seed", range(3))
def test_fast_delong_equals_the_quadratic_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, 300)
    a = np.round(rng.normal(label * 0.8, 1.0), 1)  # rounding makes many ties
    b = np.round(0.5 * a + rng.normal(label * 0.5, 1.0), 1)
    fast_aucs, fast_cov = delong(label, np.vstack([a, b]))
    slow_aucs, slow_cov = textbook_delong(label, [a, b])
    np.testing.assert_allclose(fast_aucs, slow_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast_cov, slow_cov, rtol=1e-10, atol=1e-15)
    assert fast_aucs[0] == pytest.approx(auc(label, a), abs=1e-12)


@pytest.mark.slow
def test_delong_standard_error_agrees_with_ten_thousand_bootstrap_resamples():
    rng = np.random.default_rng(11)
    label = (rng.random(2_000) < 0.2).astype(int)
    score = np.round(rng.normal(label * 1.0, 1.0), 2)
    estimate = auc_estimate(label, score)
    positives, negatives = np.flatnonzero(label == 1), np.flatnonzero(label == 0)
    resampled = []
    for _ in range(10_000):  # stratified: each class resampled within itself, as DeLong assumes
        rows = np.concatenate(
            [rng.choice(positives, positives.size), rng.choice(negatives, negatives.size)]
        )
        resampled.append(_rank_auc(label[rows], score[rows]))
    assert estimate.se == pytest.approx(np.std(resampled, ddof=1), rel=0.05)


def _rank_auc(label, score):
    ranks = stats.rankdata(score)
    m = label.sum()
    return (ranks[label == 1].sum() - m * (m + 1) / 2) / (m * (label.size - m))


def test_auc_interval_covers_the_true_auc_about_95_times_in_100():
    rng = np.random.default_rng(5)
    separation = 1.2
    true_auc = stats.norm.cdf(separation / math.sqrt(2))  # binormal with unit variances
    covered = 0
    for _ in range(1_000):
        positives = rng.normal(separation, 1.0, 100)
        negatives = rng.normal(0.0, 1.0, 400)
        label = np.r_[np.ones(100), np.zeros(400)]
        estimate = auc_estimate(label, np.r_[positives, negatives])
        covered += estimate.low <= true_auc <= estimate.high
    assert 930 <= covered <= 970


def test_paired_test_rejects_about_5_in_100_when_two_versions_are_equally_good():
    rng = np.random.default_rng(9)
    rejections = 0
    for _ in range(1_000):
        label = (rng.random(600) < 0.25).astype(int)
        signal = label * 0.8 + rng.normal(0, 1, 600)
        a = signal + rng.normal(0, 0.7, 600)  # two versions: the same signal, their own noise
        b = signal + rng.normal(0, 0.7, 600)
        rejections += paired(label, a, b).auc.p_value < 0.05
    assert 30 <= rejections <= 70


def test_paired_test_finds_a_real_difference_and_says_which_way():
    rng = np.random.default_rng(2)
    label = (rng.random(5_000) < 0.3).astype(int)
    good = label * 1.0 + rng.normal(0, 1, 5_000)
    worse = good + rng.normal(0, 1.5, 5_000)
    result = paired(label, worse, good)
    assert result.auc.value > 0 and result.auc.p_value < 1e-6
    assert verdict(result.auc).startswith("better, p = ")
    assert verdict(paired(label, good, worse).auc).startswith("worse, p = ")


def test_identical_versions_have_no_difference():
    label = np.array([0, 1, 0, 1, 1, 0])
    score = np.array([0.1, 0.7, 0.3, 0.4, 0.9, 0.2])
    result = paired(label, score, score)
    assert (result.auc.value, result.auc.se, result.auc.p_value) == (0.0, 0.0, 1.0)
    assert verdict(result.auc) == "no detectable difference at 95% (p = 1)"


def test_logloss_interval_is_the_mean_of_row_losses_with_its_standard_error():
    rng = np.random.default_rng(3)
    label = rng.integers(0, 2, 1_000)
    prob = np.clip(rng.random(1_000), 0.01, 0.99)
    losses = -(label * np.log(prob) + (1 - label) * np.log(1 - prob))
    estimate = logloss_estimate(label, prob)
    assert estimate.value == pytest.approx(losses.mean())
    assert estimate.se == pytest.approx(losses.std(ddof=1) / math.sqrt(1_000))
    assert estimate.high - estimate.low == pytest.approx(2 * 1.959964 * estimate.se, rel=1e-6)


def test_pooling_days_averages_the_lifts_and_shrinks_the_error():
    days = [Estimate(0.01, 0.004, 0, 0, 0.1), Estimate(0.02, 0.003, 0, 0, 0.1)]
    result = pooled(days)
    assert result.value == pytest.approx(0.015)
    assert result.se == pytest.approx(math.sqrt(0.004**2 + 0.003**2) / 2)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(0.015 / result.se))


def test_repeats_use_students_t():
    result = across_repeats([0.001, 0.003, 0.002])
    assert result.value == pytest.approx(0.002)
    half = stats.t.ppf(0.975, 2) * 0.001 / math.sqrt(3)
    assert (result.low, result.high) == pytest.approx((0.002 - half, 0.002 + half))
    assert math.isnan(across_repeats([0.5]).se)


def test_detectable_difference_is_z_plus_power_quantile_times_the_error():
    assert detectable_difference(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)


def test_wilson_interval_stays_inside_zero_and_one_and_covers():
    assert proportion_estimate(0, 50).low == 0.0
    assert proportion_estimate(50, 50).high == 1.0
    rng = np.random.default_rng(4)
    covered = sum(
        (e := proportion_estimate(int(rng.binomial(400, 0.05)), 400)).low <= 0.05 <= e.high
        for _ in range(1_000)
    )
    assert 930 <= covered <= 975


@pytest.mark.parametrize("case", ["random", "ties", "all tied", "separated"])
def test_the_point_auc_read_each_epoch_is_the_delong_auc(case):
    """Training reads `metrics.auc` after every epoch and `eval` reports DeLong's: one AUC."""
    rng = np.random.default_rng(5)
    label = rng.integers(0, 2, 500)
    score = {
        "random": rng.random(500),
        "ties": np.round(rng.normal(label * 0.7, 1.0), 1),
        "all tied": np.full(500, 0.3),
        "separated": label + rng.random(500) * 0.5,
    }[case]
    assert auc(label, score) == pytest.approx(delong(label, score)[0][0], abs=1e-12)
    assert auc_estimate(label, score).value == pytest.approx(auc(label, score), abs=1e-12)


def test_one_two_sided_p_value_for_normal_and_t():
    assert two_sided_p(1.959964, 1.0) == pytest.approx(0.05, abs=1e-6)
    assert two_sided_p(-2.0, 1.0) == pytest.approx(2 * stats.norm.sf(2.0))
    assert two_sided_p(0.002, 0.001, df=2) == pytest.approx(2 * stats.t.sf(2.0, 2))
    assert two_sided_p(0.0, 0.0) == 1.0 and two_sided_p(0.1, 0.0) == 0.0
    assert across_repeats([0.001, 0.003, 0.002]).p_value == pytest.approx(
        two_sided_p(0.002, 0.001 / math.sqrt(3), df=2)
    )


def test_an_estimate_reads_the_same_as_an_object_and_as_json():
    estimate = Estimate(0.0012, 0.002, -0.0031, 0.00554, 0.5)
    assert format_interval(estimate, signed=True) == "+0.0012 [-0.0031, +0.0055]"
    assert format_interval(estimate.to_dict(), signed=True) == "+0.0012 [-0.0031, +0.0055]"
    assert format_interval(Estimate(0.7434, 0.005, 0.7327, 0.7541)) == "0.7434 [0.7327, 0.7541]"
