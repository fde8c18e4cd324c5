"""Intercept recalibration: the first thing a practitioner tries when the base rate drifts.

One number, a shift of the logit, refitted whenever labels arrive so that on the most recent
`window_rows` labelled impressions the mean corrected pCTR equals their CTR. A shift of every
prediction by the same amount leaves their order, and so a slot's AUC, unchanged: what it gains
is calibration (Logloss), which is why it separates calibration gains from ranking gains when
set beside the error memory.
"""

from __future__ import annotations

import numpy as np

from reloop_cli.adapt.base import Adapter, Rows, logit, require_labels, sigmoid

MAX_SHIFT = 5.0  # a shift past ±5 logits means the window is broken, not drifted


def fit_shift(logits: np.ndarray, labels: np.ndarray, iterations: int = 50) -> float:
    """The b with mean(sigmoid(logits + b)) == mean(labels), by Newton's method (the mean is
    increasing in b, so it converges); 0 for an empty window, clipped to ±MAX_SHIFT when the
    window has no clicks or only clicks."""
    if logits.size == 0:
        return 0.0
    target = float(np.mean(labels))
    shift = 0.0
    for _ in range(iterations):
        prob = sigmoid(logits + shift)
        gap = float(prob.mean()) - target
        slope = float((prob * (1 - prob)).mean())
        if abs(gap) < 1e-12 or slope < 1e-12:
            break
        shift = float(np.clip(shift - gap / slope, -MAX_SHIFT, MAX_SHIFT))
    return shift


class Intercept(Adapter):
    """Shift the logit so the recent labelled window's mean pCTR matches its CTR."""

    name = "intercept"

    def __init__(self, window_rows: int = 5_000) -> None:
        self.window_rows = window_rows
        self.logits = np.zeros(0)
        self.labels = np.zeros(0)
        self.shift = 0.0

    def predict(self, rows: Rows) -> np.ndarray:
        if self.shift == 0.0:  # nothing learned yet: the base, exactly
            return np.asarray(rows.pctr, dtype=np.float64).copy()
        return sigmoid(logit(rows.pctr) + self.shift)

    def observe(self, rows: Rows) -> None:
        labels = require_labels(rows, self.name)
        self.logits = np.concatenate([self.logits, logit(rows.pctr)])[-self.window_rows :]
        self.labels = np.concatenate([self.labels, labels])[-self.window_rows :]
        self.shift = fit_shift(self.logits, self.labels)

    def reset(self) -> None:
        self.__init__(self.window_rows)

    def memory_bytes(self) -> int:
        return int(self.logits.nbytes + self.labels.nbytes)
