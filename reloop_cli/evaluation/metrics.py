"""Offline CTR metrics: AUC (exact, ties averaged), Logloss, and what calibration looks like;
`summarise` adds their 95% intervals (`statistics`), so no figure is read without its noise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from reloop_cli.evaluation import statistics


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; tied scores share the
    average rank, so the value equals the trapezoidal ROC area. NaN if one class is absent."""
    label = np.asarray(label, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    positives = label.sum()
    negatives = label.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    upper_rank = np.cumsum(counts)
    average_rank = upper_rank - (counts - 1) / 2.0
    rank_sum = average_rank[inverse][label == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def logloss(label: np.ndarray, prob: np.ndarray) -> float:
    """Mean binary cross-entropy (the mean of `statistics.row_losses`, predictions clipped to
    [eps, 1 - eps])."""
    return float(np.mean(statistics.row_losses(label, prob)))


def calibration_buckets(label: np.ndarray, prob: np.ndarray, buckets: int = 10) -> list[dict]:
    """Predicted vs observed CTR per equal-count bucket of predictions (a reliability table)."""
    order = np.argsort(prob, kind="stable")
    rows = []
    for part in np.array_split(order, buckets):
        if part.size:
            rows.append(
                {
                    "rows": int(part.size),
                    "mean_pctr": float(prob[part].mean()),
                    "ctr": float(label[part].mean()),
                }
            )
    return rows


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of exposure counts (0: every item shown equally; near 1: a few items
    get all impressions), over the items that could have been shown, zeros included."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    if values.size == 0 or values.sum() == 0:
        return float("nan")
    ranks = np.arange(1, values.size + 1)
    return float((2 * ranks - values.size - 1).dot(values) / (values.size * values.sum()))


@dataclass(frozen=True)
class DayMetrics:
    """The numbers a CTR team reads for one day of one version: AUC and Logloss with their 95%
    intervals, counts, calibration (mean pCTR / CTR, and the expected calibration error over
    equal-count buckets), and the smallest AUC difference these rows could detect between two
    versions whose errors were unrelated (95% confidence, 80% power; a parent and its child are
    correlated and a paired test detects less)."""

    auc: float
    auc_low: float
    auc_high: float
    auc_se: float
    logloss: float
    logloss_low: float
    logloss_high: float
    detectable_auc_difference: float
    rows: int
    clicks: int
    ctr: float
    mean_pctr: float
    calibration: float
    ece: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarise(label: np.ndarray, prob: np.ndarray) -> DayMetrics:
    """`DayMetrics` of predictions `prob` against the labels."""
    label = np.asarray(label, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    nan = float("nan")
    ctr = float(label.mean()) if label.size else nan
    mean_pctr = float(prob.mean()) if prob.size else nan
    buckets = calibration_buckets(label, prob) if label.size else []
    ece = (
        sum(b["rows"] * abs(b["mean_pctr"] - b["ctr"]) for b in buckets) / label.size
        if label.size
        else nan
    )
    auc_interval = statistics.auc_estimate(label, prob) if label.size else None
    logloss_interval = statistics.logloss_estimate(label, prob) if label.size else None
    detectable = (
        statistics.detectable_difference(statistics.unpaired_difference_se(auc_interval.se))
        if auc_interval
        else nan
    )
    return DayMetrics(
        auc=auc(label, prob),
        auc_low=auc_interval.low if auc_interval else nan,
        auc_high=auc_interval.high if auc_interval else nan,
        auc_se=auc_interval.se if auc_interval else nan,
        logloss=logloss(label, prob),
        logloss_low=logloss_interval.low if logloss_interval else nan,
        logloss_high=logloss_interval.high if logloss_interval else nan,
        detectable_auc_difference=detectable,
        rows=int(label.size),
        clicks=int(label.sum()),
        ctr=ctr,
        mean_pctr=mean_pctr,
        calibration=mean_pctr / ctr if ctr > 0 else nan,
        ece=float(ece),
    )
