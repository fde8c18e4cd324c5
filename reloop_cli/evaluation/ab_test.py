"""An online experiment's arms judged on their logged clicks: CTR per arm, the candidate's relative
lift with an interval over users (the randomisation unit), a check of the split, and a confidence
sequence that stays valid however many nights it is looked at.

- **Units, not impressions.** A user's impressions are correlated (one user clicks a lot, another
  never), so an interval that counts impressions as independent is too narrow. Each arm's CTR is
  a ratio of per-unit sums, R = Σc_i / Σn_i, and its variance comes from the delta method over
  units (Deng, Knoblich and Lu, "Applying the Delta Method in Metric Analytics", KDD 2018):
  Var(R) ≈ (σ_c² - 2R·σ_cn + R²·σ_n²) / (N·n̄²), with N units, n̄ their mean impressions.
  The relative lift L = R_cand / R_live - 1 has Var(L) ≈ (1 + L)² (Var(R_c)/R_c² + Var(R_l)/R_l²).
- **Sample-ratio mismatch.** Units per arm against the configured share, by a chi-square
  goodness-of-fit test; p below `experiment.srm_p` (0.001, as experimentation platforms use)
  means the split is broken (a bug in routing, logging or the click join), and no decision is
  taken on it.
- **Looking every night.** A fixed-sample 95% interval checked on 14 nights says "significant"
  far more than 5% of the time on an A/A test. The interval used for decisions is instead the
  asymptotic normal-mixture confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and
  Ramdas ("Time-uniform central limit theory and asymptotic confidence sequences", Annals of
  Statistics 2024, Theorem 2.2 with Robbins' normal mixture), for an estimate that is a mean of
  t unit-level terms of standard deviation σ̂:

      estimate ± σ̂ · sqrt( 2(tρ² + 1) / (t²ρ²) · log( sqrt(tρ² + 1) / α ) )

  which covers the true value at every t at once with probability 1 - α (asymptotically). Here
  σ̂² = t·Var(L) (the delta-method variance times the units), and ρ is chosen to make the
  sequence tightest at t* = `experiment.planned_units`: ρ² = (-2 log α + log(1 - 2 log α)) / t*
  (their eq. (2.7)). The library that implements these (`confseq`) builds C++ from source and
  was last released in 2023, so the formula is written out here instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy import stats

LIVE, CANDIDATE = "live", "candidate"


@dataclass(frozen=True)
class ArmFigures:
    """One arm: its units, requests, impressions and clicks, CTR per impression and per
    request, and the CTR's standard error over units."""

    units: int
    requests: int
    impressions: int
    clicks: int
    ctr: float | None
    ctr_per_request: float | None
    ctr_se: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def per_unit(rows: pl.DataFrame, label: str) -> pl.DataFrame:
    """Rows (experiment_arm, experiment_unit, request_id, label) -> one row per (arm, unit):
    impressions, clicks, requests."""
    return rows.group_by("experiment_arm", "experiment_unit").agg(
        pl.len().alias("impressions"),
        pl.col(label).cast(pl.Float64).sum().alias("clicks"),
        pl.col("request_id").n_unique().alias("requests"),
    )


def _ratio(clicks: np.ndarray, impressions: np.ndarray) -> tuple[float, float]:
    """(Σc / Σn, its delta-method variance over units)."""
    units = clicks.size
    ratio = clicks.sum() / impressions.sum()
    if units < 2:
        return float(ratio), math.inf
    mean_n = impressions.mean()
    var_c, var_n = clicks.var(ddof=1), impressions.var(ddof=1)
    cov = np.cov(clicks, impressions, ddof=1)[0, 1]
    variance = (var_c - 2 * ratio * cov + ratio**2 * var_n) / (units * mean_n**2)
    return float(ratio), float(max(variance, 0.0))


def arm_figures(units: pl.DataFrame, arm: str) -> ArmFigures:
    part = units.filter(pl.col("experiment_arm") == arm)
    if part.height == 0 or part["impressions"].sum() == 0:
        return ArmFigures(part.height, 0, 0, 0, None, None, None)
    clicks = part["clicks"].to_numpy()
    impressions = part["impressions"].to_numpy().astype(np.float64)
    ratio, variance = _ratio(clicks, impressions)
    requests = int(part["requests"].sum())
    return ArmFigures(
        units=part.height,
        requests=requests,
        impressions=int(impressions.sum()),
        clicks=int(clicks.sum()),
        ctr=ratio,
        ctr_per_request=float(clicks.sum() / requests) if requests else None,
        ctr_se=math.sqrt(variance) if math.isfinite(variance) else None,
    )


@dataclass(frozen=True)
class Lift:
    """The candidate's relative CTR lift over live, its standard error over units, the
    fixed-sample 95% interval (for reading one night) and the confidence sequence (for
    deciding across nights)."""

    value: float
    se: float
    fixed_low: float
    fixed_high: float
    sequence_low: float
    sequence_high: float
    units: int
    alpha: float

    def to_dict(self) -> dict:
        return asdict(self)


def lift(
    units: pl.DataFrame, alpha: float, planned_units: int, per: str = "impressions"
) -> Lift | None:
    """R_candidate / R_live - 1 with its intervals, R clicks per impression (or per request,
    `per = "requests"`: per slate); None while an arm has no click or < 2 units."""
    arms = {}
    for arm in (LIVE, CANDIDATE):
        part = units.filter(pl.col("experiment_arm") == arm)
        if part.height < 2 or part["clicks"].sum() == 0:
            return None
        arms[arm] = _ratio(part["clicks"].to_numpy(), part[per].to_numpy().astype(np.float64))
    (live, live_var), (cand, cand_var) = arms[LIVE], arms[CANDIDATE]
    value = cand / live - 1.0
    se = (cand / live) * math.sqrt(cand_var / cand**2 + live_var / live**2)
    count = units.height
    half = sequence_half_width(se, count, alpha, planned_units)
    z = stats.norm.ppf(1 - alpha / 2)
    return Lift(value, se, value - z * se, value + z * se, value - half, value + half, count, alpha)


def sequence_half_width(se: float, units: int, alpha: float, planned_units: int) -> float:
    """The normal-mixture confidence sequence's half-width at `units` (module docstring)."""
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / planned_units
    t_rho2 = units * rho2
    sigma2 = se**2 * units  # the unit-level variance σ̂²
    width2 = sigma2 * 2 * (t_rho2 + 1) / (units**2 * rho2) * math.log(math.sqrt(t_rho2 + 1) / alpha)
    return math.sqrt(width2)


@dataclass(frozen=True)
class SampleRatio:
    """Units per arm against the share the candidate was given."""

    live_units: int
    candidate_units: int
    expected_share: float
    observed_share: float | None
    p_value: float | None
    broken: bool

    def to_dict(self) -> dict:
        return asdict(self)


def sample_ratio(
    live_units: int, candidate_units: int, share: float, threshold: float
) -> SampleRatio:
    """The chi-square goodness-of-fit test of the split (two arms: one degree of freedom)."""
    total = live_units + candidate_units
    if total == 0:
        return SampleRatio(0, 0, share, None, None, False)
    expected = [total * (1 - share), total * share]
    p_value = float(stats.chisquare([live_units, candidate_units], expected).pvalue)
    return SampleRatio(
        live_units, candidate_units, share, candidate_units / total, p_value, p_value < threshold
    )
