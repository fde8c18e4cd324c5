"""Intercept recalibration: a calibration fix that cannot move a slot's ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from reloop_cli.adapt.base import Rows
from reloop_cli.adapt.intercept import Intercept, fit_shift


def rows(n: int, seed: int, rate_shift: float) -> Rows:
    """Predictions that are 'rate_shift' logits off the truth the labels follow."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(-3.0, 0.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(truth + rate_shift)))).astype(np.float64)
    return Rows(
        pctr=1 / (1 + np.exp(-truth)),
        keys=np.zeros((n, 1), np.float32),
        categorical=torch.zeros((n, 1), dtype=torch.long),
        dense=torch.zeros((n, 0)),
        labels=labels,
    )


def test_the_fitted_window_ends_with_mean_pctr_equal_to_its_ctr():
    adapter = Intercept(window_rows=3_000)
    for seed in range(3):
        adapter.observe(rows(2_000, seed, rate_shift=0.8))
    window = rows(2_000, 1, 0.8), rows(2_000, 2, 0.8)
    # the window is the last 3,000 labelled rows: 1,000 of the second batch and the third
    labels = np.concatenate([window[0].labels[-1_000:], window[1].labels])
    pctr = np.concatenate([window[0].pctr[-1_000:], window[1].pctr])
    corrected = adapter.predict(
        Rows(pctr=pctr, keys=np.zeros((3_000, 1), np.float32), categorical=None, dense=None)
    )
    assert corrected.sum() / labels.sum() == pytest.approx(1.0, abs=1e-9)
    assert adapter.shift > 0.5  # it found the under-prediction


def test_a_slot_keeps_its_auc_under_the_shift():
    adapter = Intercept()
    adapter.observe(rows(3_000, 0, rate_shift=-1.0))
    slot = rows(1_500, 7, rate_shift=-1.0)
    corrected = adapter.predict(slot)
    assert not np.allclose(corrected, slot.pctr)
    assert roc_auc_score(slot.labels, corrected) == pytest.approx(
        roc_auc_score(slot.labels, slot.pctr), abs=1e-12
    )


def test_an_empty_or_one_sided_window_gives_a_bounded_shift():
    assert fit_shift(np.zeros(0), np.zeros(0)) == 0.0
    assert abs(fit_shift(np.zeros(100), np.zeros(100))) <= 5.0
    assert abs(fit_shift(np.zeros(100), np.ones(100))) <= 5.0
