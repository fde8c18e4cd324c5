"""AUC and Logloss equal scikit-learn's, ties included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from reloop_cli.evaluation.metrics import auc, logloss, summarise


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn_on_random_scores_with_ties(seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, 2_000)
    score = np.round(rng.random(2_000) + 0.3 * label, 1)  # rounding makes many ties
    assert auc(label, score) == pytest.approx(roc_auc_score(label, score), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_logloss_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, 1_000)
    prob = np.clip(rng.random(1_000), 1e-3, 1 - 1e-3)
    assert logloss(label, prob) == pytest.approx(log_loss(label, prob), rel=1e-10)


def test_auc_is_nan_when_one_class_is_missing():
    assert math.isnan(auc(np.ones(5), np.linspace(0, 1, 5)))


def test_summary_reports_counts_and_calibration():
    label = np.array([1, 0, 0, 0])
    prob = np.array([0.5, 0.5, 0.25, 0.25])
    s = summarise(label, prob)
    assert (s.rows, s.clicks) == (4, 1)
    assert s.ctr == pytest.approx(0.25)
    assert s.mean_pctr == pytest.approx(0.375)
    assert s.calibration == pytest.approx(1.5)
