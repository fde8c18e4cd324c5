"""Whether a difference is real: intervals on AUC and Logloss, paired tests between versions
scored on the same rows, pooling over days, and summaries across repeated runs.

- AUC: DeLong, DeLong and Clarke-Pearson (1988) variance, computed with the O(n log n) midrank
  algorithm of Sun and Xu (2014), for one score or several scored on the same rows (their
  covariance gives the paired test of a difference).
- Logloss: the mean of per-row losses, with the normal approximation (central limit theorem); a
  paired difference is the mean of per-row differences.
- Days are independent samples: a lift pooled over days is the mean of the daily lifts, its
  variance the sum of their variances over the number of days squared.
- Repeats (training seeds, simulated worlds) are summarised with Student's t across them.

Every interval is two-sided at `confidence` (0.95 unless said); p-values are two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy import stats

CONFIDENCE = 0.95
POWER = 0.8  # for the smallest detectable difference
LOGLOSS_EPS = 1e-7  # predictions are clipped to [eps, 1 - eps] before the log


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and interval, and (for a difference) the
    p-value of 'no difference'."""

    value: float
    se: float
    low: float
    high: float
    p_value: float | None = None
    confidence: float = CONFIDENCE

    def to_dict(self) -> dict:
        return asdict(self)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def format_interval(
    estimate: Estimate | Mapping[str, float], *, signed: bool = False, digits: int = 4
) -> str:
    """'0.7434 [0.7327, 0.7541]', or '+0.0012 [-0.0031, +0.0055]' with `signed`: the one way the
    tables, the report and the gate print an estimate with its interval (an `Estimate`, or one
    read back from JSON as a dict)."""
    if isinstance(estimate, Estimate):
        value, low, high = estimate.value, estimate.low, estimate.high
    else:
        value, low, high = estimate["value"], estimate["low"], estimate["high"]
    sign = "+" if signed else ""
    return f"{value:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def two_sided_p(value: float, se: float, df: int | None = None) -> float:
    """The two-sided p-value of "the true value is 0" for an estimate and its standard error:
    normal, or Student's t with `df` degrees of freedom. With no spread (se 0) the data decide
    outright: 1 when the estimate is 0, else 0."""
    if not se > 0:
        return 1.0 if value == 0 else 0.0
    distribution = stats.norm if df is None else stats.t(df)
    return float(2 * distribution.sf(abs(value) / se))


def normal_estimate(
    value: float,
    se: float,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    test: bool = False,
) -> Estimate:
    """value ± z·se, clipped to `bounds`; with `test`, the p-value of value = 0."""
    half = _z(confidence) * se
    low, high = max(bounds[0], value - half), min(bounds[1], value + half)
    p_value = two_sided_p(value, se) if test else None
    return Estimate(float(value), float(se), float(low), float(high), p_value, confidence)


def delong(label: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k scores on the same rows and their k x k covariance (DeLong), via midranks.

    `scores` is [k, rows] (or [rows] for one). Ties count one half, as in the AUC itself.
    Returns NaNs when a class is missing."""
    label = np.asarray(label).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positives, negatives = scores[:, label], scores[:, ~label]
    m, n = positives.shape[1], negatives.shape[1]
    k = scores.shape[0]
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    rank_pos = stats.rankdata(positives, axis=1)
    rank_neg = stats.rankdata(negatives, axis=1)
    rank_all = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    # Structural components: for each positive, the share of negatives it outranks; for each
    # negative, the share of positives that outrank it.
    per_positive = (rank_all[:, :m] - rank_pos) / n
    per_negative = 1.0 - (rank_all[:, m:] - rank_neg) / m
    cov_pos = np.atleast_2d(np.cov(per_positive)) if m > 1 else np.zeros((k, k))
    cov_neg = np.atleast_2d(np.cov(per_negative)) if n > 1 else np.zeros((k, k))
    return aucs, cov_pos / m + cov_neg / n


def auc_estimate(label: np.ndarray, score: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """AUC with DeLong's interval, clipped to [0, 1]."""
    aucs, cov = delong(label, score)
    return normal_estimate(aucs[0], math.sqrt(max(cov[0, 0], 0.0)), confidence, (0.0, 1.0))


def row_losses(label: np.ndarray, prob: np.ndarray, eps: float = LOGLOSS_EPS) -> np.ndarray:
    """Per-row binary cross-entropy (the terms whose mean is the Logloss)."""
    label = np.asarray(label, dtype=np.float64)
    prob = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    return -(label * np.log(prob) + (1 - label) * np.log(1 - prob))


def mean_estimate(
    values: np.ndarray, confidence: float = CONFIDENCE, test: bool = False
) -> Estimate:
    """The mean of per-row values, with the normal approximation."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return Estimate(
            float(values.mean()) if values.size else math.nan, math.nan, math.nan, math.nan
        )
    se = float(values.std(ddof=1) / math.sqrt(values.size))
    return normal_estimate(float(values.mean()), se, confidence, test=test)


def logloss_estimate(
    label: np.ndarray, prob: np.ndarray, confidence: float = CONFIDENCE
) -> Estimate:
    return mean_estimate(row_losses(label, prob), confidence)


@dataclass(frozen=True)
class Paired:
    """B minus A on the same rows: the AUC difference (DeLong's paired test) and the Logloss
    difference (the mean per-row difference)."""

    auc: Estimate
    logloss: Estimate
    rows: int
    clicks: int

    def to_dict(self) -> dict:
        return {
            "auc": self.auc.to_dict(),
            "logloss": self.logloss.to_dict(),
            "rows": self.rows,
            "clicks": self.clicks,
        }


def paired(
    label: np.ndarray, a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE
) -> Paired:
    """How B's predictions differ from A's on the same labelled rows."""
    label = np.asarray(label)
    aucs, cov = delong(label, np.vstack([a, b]))
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    auc = normal_estimate(aucs[1] - aucs[0], math.sqrt(max(variance, 0.0)), confidence, test=True)
    logloss = mean_estimate(row_losses(label, b) - row_losses(label, a), confidence, test=True)
    return Paired(auc, logloss, int(label.size), int(np.asarray(label).sum()))


def pooled(estimates: list[Estimate], confidence: float = CONFIDENCE) -> Estimate:
    """The mean of independent estimates (one per day), with its interval and p-value."""
    values = np.array([e.value for e in estimates], dtype=np.float64)
    variances = np.array([e.se**2 for e in estimates], dtype=np.float64)
    keep = ~np.isnan(values) & ~np.isnan(variances)
    if not keep.any():
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    se = math.sqrt(variances[keep].sum()) / keep.sum()
    return normal_estimate(float(values[keep].mean()), se, confidence, test=True)


def across_repeats(values: list[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean over repeated runs with Student's t interval, and the p-value of mean = 0."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if data.size < 2:
        value = float(data.mean()) if data.size else math.nan
        return Estimate(value, math.nan, math.nan, math.nan)
    se = float(data.std(ddof=1) / math.sqrt(data.size))
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df=data.size - 1))
    mean = float(data.mean())
    p_value = two_sided_p(mean, se, df=data.size - 1)
    return Estimate(mean, se, mean - quantile * se, mean + quantile * se, p_value, confidence)


def detectable_difference(se: float, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at `confidence` finds with `power`, given
    the standard error of the difference: (z_{1-a/2} + z_power) * se."""
    return (_z(confidence) + float(stats.norm.ppf(power))) * se


def unpaired_difference_se(se: float) -> float:
    """The standard error of a difference between two independent estimates of equal error."""
    return math.sqrt(2) * se


def tally(differences: list[Estimate], higher_is_better: bool = True) -> dict[str, int]:
    """How many differences (one per repeat or world) alone were better, worse, or not
    different (their interval holds zero)."""
    better = sum(d.excludes_zero() and (d.value > 0) == higher_is_better for d in differences)
    worse = sum(d.excludes_zero() for d in differences) - better
    return {"better": better, "worse": worse, "no_difference": len(differences) - better - worse}


def verdict(difference: Estimate, higher_is_better: bool = True) -> str:
    """One line: 'better, p = 0.003', 'worse, p = 0.04' or 'no detectable difference at 95%'."""
    if difference.p_value is None or math.isnan(difference.value):
        return "not enough data to compare"
    level = f"{difference.confidence:.0%}"
    if not difference.excludes_zero():
        return f"no detectable difference at {level} (p = {difference.p_value:.2g})"
    good = (difference.value > 0) == higher_is_better
    return f"{'better' if good else 'worse'}, p = {difference.p_value:.2g}"


def proportion_estimate(successes: int, trials: int, confidence: float = CONFIDENCE) -> Estimate:
    """A rate (a CTR) with Wilson's score interval (scipy's), which stays inside [0, 1] and is
    accurate for the small counts of a day's clicks."""
    if trials == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    rate = successes / trials
    interval = stats.binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    se = math.sqrt(rate * (1 - rate) / trials)
    return Estimate(rate, se, float(interval.low), float(interval.high), None, confidence)


def group_aucs(label: np.ndarray, score: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, ...]:
    """(per-group AUC, rows) for the groups holding both a click and a non-click; ties count
    one half, as in the AUC itself."""
    frame = pl.DataFrame(
        {"g": pl.Series(groups).cast(pl.String), "y": np.asarray(label, np.int8), "s": score}
    )
    ranked = frame.with_columns(pl.col("s").rank("average").over("g").alias("r"))
    per_group = (
        ranked.group_by("g")
        .agg(
            pl.len().alias("rows"),
            pl.col("y").sum().alias("m"),
            (pl.col("r") * pl.col("y")).sum().alias("rank_sum"),
        )
        .with_columns((pl.col("rows") - pl.col("m")).alias("n"))
        .filter((pl.col("m") > 0) & (pl.col("n") > 0))
        .sort("g")
    )
    m, n = per_group["m"].to_numpy().astype(np.float64), per_group["n"].to_numpy()
    aucs = (per_group["rank_sum"].to_numpy() - m * (m + 1) / 2) / (m * n)
    return aucs, per_group["rows"].to_numpy().astype(np.float64)


def _weighted_mean(values: np.ndarray, weights: np.ndarray, confidence: float, test: bool):
    if values.size < 2:
        value = float(values.mean()) if values.size else math.nan
        return Estimate(value, math.nan, math.nan, math.nan)
    share = weights / weights.sum()
    mean = float((share * values).sum())
    se = math.sqrt(float((share**2 * (values - mean) ** 2).sum()) * values.size / (values.size - 1))
    return normal_estimate(mean, se, confidence, test=test)


def gauc_estimate(
    label: np.ndarray, score: np.ndarray, groups: np.ndarray, confidence: float = CONFIDENCE
) -> Estimate:
    """gAUC: the row-weighted mean of per-group AUCs (groups such as users with both a click
    and a non-click), its interval treating groups as the sampled units."""
    aucs, rows = group_aucs(label, score, groups)
    return _weighted_mean(aucs, rows, confidence, test=False)


def paired_gauc(
    label: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """gAUC of B minus A on the same rows: the weighted mean of per-group differences."""
    first, rows = group_aucs(label, a, groups)
    second, _ = group_aucs(label, b, groups)
    return _weighted_mean(second - first, rows, confidence, test=True)
