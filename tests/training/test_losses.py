"""The three losses against values computed by hand from the paper's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from reloop_cli.training.losses import (
    bce_loss,
    kd_loss,
    reloop_loss,
    self_correction,
    training_loss,
)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def bce(p: float, y: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize(
    ("y", "y_last", "y_hat", "expected"),
    [
        (1.0, 0.8, 0.9, 0.0),  # positive, better than last: no penalty
        (1.0, 0.8, 0.6, 0.2),  # positive, worse than last: the shortfall
        (0.0, 0.3, 0.2, 0.0),  # negative, better than last
        (0.0, 0.3, 0.5, 0.2),  # negative, worse than last: the excess
    ],
)
def test_self_correction_matches_the_papers_worked_cases(y, y_last, y_hat, expected):
    value = self_correction(t(y_hat), t(y), t(y_last)).item()
    assert value == pytest.approx(expected, abs=1e-12)


def test_reloop_loss_mixes_correction_and_bce_by_alpha():
    y, y_last, y_hat = t(1.0, 0.0), t(0.8, 0.3), (0.6, 0.5)
    logits = t(logit(y_hat[0]), logit(y_hat[1]))
    alpha = 0.3
    per_row = [alpha * 0.2 + (1 - alpha) * bce(p, yy) for p, yy in zip(y_hat, (1, 0), strict=True)]
    expected = sum(per_row) / 2
    assert reloop_loss(logits, y, y_last, alpha).item() == pytest.approx(expected, rel=1e-9)


def test_reloop_loss_is_zero_correction_when_better_than_last():
    y, y_last = t(1.0, 0.0), t(0.8, 0.3)
    logits = t(logit(0.9), logit(0.2))
    assert reloop_loss(logits, y, y_last, alpha=1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_alpha_zero_is_pure_bce_for_both_kd_and_reloop():
    y, y_last = t(1.0, 0.0, 1.0), t(0.9, 0.1, 0.2)
    logits = t(0.3, -1.2, 2.0)
    plain = bce_loss(logits, y).item()
    assert reloop_loss(logits, y, y_last, 0.0).item() == pytest.approx(plain, rel=1e-12)
    assert kd_loss(logits, y, y_last, 0.0).item() == pytest.approx(plain, rel=1e-12)


def test_kd_with_alpha_one_is_bce_against_the_parents_prediction():
    y, y_last, p = t(1.0, 0.0), t(0.8, 0.3), (0.6, 0.5)
    logits = t(logit(p[0]), logit(p[1]))
    expected = (bce(0.6, 0.8) + bce(0.5, 0.3)) / 2
    assert kd_loss(logits, y, y_last, 1.0).item() == pytest.approx(expected, rel=1e-9)


def test_rows_without_parent_prediction_get_plain_bce():
    y, y_last = t(1.0, 0.0), t(float("nan"), float("nan"))
    logits = t(0.4, -0.7)
    plain = bce_loss(logits, y).item()
    for name in ("kd", "reloop"):
        assert training_loss(name, logits, y, y_last, 0.9).item() == pytest.approx(plain)


def test_no_gradient_flows_into_y_last():
    y_last = t(0.8, 0.3).requires_grad_(True)
    logits = t(0.1, 0.2).requires_grad_(True)
    reloop_loss(logits, t(1.0, 0.0), y_last, 0.5).backward()
    assert y_last.grad is None or torch.all(y_last.grad == 0)
    assert logits.grad is not None and torch.any(logits.grad != 0)
