"""One night's evidence on a running experiment, read from the joined impressions, and the
decision it supports (docs/guides/experiments.md).

The evidence of a stage is every labelled impression the server logged with the experiment's id
and that stage (`experiment_stage`), so rows served at an earlier share never mix with the
current one (a ramp changes who is in each arm over time; pooling across stages would compare
different mixes of days). Each canary stage starts its own confidence sequence at level
`alpha / len(shares)` (Bonferroni over the stages), so the whole experiment stays within
`experiment.alpha` however many nights it is looked at.

Decisions, in this order:
- `blocked`: the split fails its sample-ratio check; nothing is promoted, rolled back or ramped
  on a broken split (a person decides, or the experiment ends inconclusive at `max_nights`).
- `waiting`: an arm has fewer than `min_units` units.
- `rollback`: the confidence sequence lies wholly below 0 (the candidate is worse).
- `promote`: at the last share, its lower end is above -`margin` (not worse by more than it).
- `ramp`: `stage_nights` nights at a share without harm: the next share.
- `inconclusive`: `max_nights` nights without a decision.
- `continue` otherwise.
In shadow (stage 0) the candidate is shown to nobody; the paired AUC and Logloss on the served
rows decide once, after `shadow_nights`: `rollback` when it is worse on both with the intervals
excluding 0, else `canary` (the first share). An A/A experiment (the live release against
itself) decides nothing: it reports, flags a broken split or arms that differ, and ends at
`max_nights`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from reloop_cli.evaluation import ab_test, statistics
from reloop_cli.spec.experiment import ExperimentSpec
from reloop_cli.store.experiments import Experiment

COLUMNS = ("experiment_id", "experiment_stage", "experiment_arm", "experiment_unit")


def stage_rows(joined: Path, label: str, experiment: str, stage: int) -> pl.DataFrame:
    """The labelled impressions of one stage of an experiment, from the click join's files
    (files written before experiments existed have no such columns and are skipped)."""
    frames = []
    for path in sorted(joined.glob("*.parquet")):
        names = pl.read_parquet_schema(path)
        if not all(c in names for c in COLUMNS):
            continue
        wanted = [*COLUMNS, "impression_id", "request_id", label, "served_pctr", "shadow_pctr"]
        frame = pl.read_parquet(path, columns=[c for c in wanted if c in names]).filter(
            (pl.col("experiment_id") == experiment) & (pl.col("experiment_stage") == stage)
        )
        frames.append(frame.with_columns(pl.col("shadow_pctr").cast(pl.Float64)))
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed").unique("impression_id", keep="first")


def evidence(
    rows: pl.DataFrame, label: str, experiment: Experiment, settings: ExperimentSpec
) -> dict:
    """What one stage's rows show: per arm, the lift with its intervals, the split's check;
    in shadow, the paired offline figures."""
    if experiment.mode == "shadow":
        return {"stage": 0, "mode": "shadow", "shadow": shadow_figures(rows, label)}
    alpha = stage_alpha(experiment, settings)
    units = ab_test.per_unit(rows, label) if rows.height else _no_units()
    arms = {arm: ab_test.arm_figures(units, arm) for arm in (ab_test.LIVE, ab_test.CANDIDATE)}
    split = ab_test.sample_ratio(
        arms[ab_test.LIVE].units, arms[ab_test.CANDIDATE].units, experiment.share, settings.srm_p
    )
    lift = ab_test.lift(units, alpha, settings.planned_units) if units.height else None
    # clicks per request (per slate): reported beside, the decision reads the per-impression one
    per_request = (
        ab_test.lift(units, alpha, settings.planned_units, per="requests") if units.height else None
    )
    crossed = (
        units.group_by("experiment_unit").agg(pl.col("experiment_arm").n_unique().alias("n"))
        if units.height
        else pl.DataFrame({"n": []})
    )
    return {
        "stage": experiment.stage,
        "mode": experiment.mode,
        "share": experiment.share,
        "arms": {name: figures.to_dict() for name, figures in arms.items()},
        "lift": lift.to_dict() if lift else None,
        "lift_per_request": per_request.to_dict() if per_request else None,
        "sample_ratio": split.to_dict(),
        "units_in_both_arms": int((crossed["n"] > 1).sum()),
        "alpha": alpha,
    }


def _no_units() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "experiment_arm": pl.String,
            "experiment_unit": pl.String,
            "impressions": pl.UInt32,
            "clicks": pl.Float64,
            "requests": pl.UInt32,
        }
    )


def stage_alpha(experiment: Experiment, settings: ExperimentSpec) -> float:
    stages = len(experiment.settings.get("shares", settings.shares))
    return settings.alpha if experiment.mode == "aa" else settings.alpha / stages


def shadow_figures(rows: pl.DataFrame, label: str) -> dict | None:
    """Candidate (shadow) against live (served) on the same served rows: paired AUC and Logloss
    differences with intervals, and each one's calibration (mean pCTR over the CTR)."""
    if rows.height == 0 or "shadow_pctr" not in rows.columns:
        return None
    both = rows.drop_nulls(["served_pctr", "shadow_pctr"])
    labels = both[label].to_numpy().astype(np.float64)
    if labels.size == 0 or labels.min() == labels.max():
        return {"rows": int(labels.size), "clicks": int(labels.sum()), "paired": None}
    live, candidate = both["served_pctr"].to_numpy(), both["shadow_pctr"].to_numpy()
    ctr = labels.mean()
    return {
        "rows": int(labels.size),
        "clicks": int(labels.sum()),
        "paired": statistics.paired(labels, live, candidate).to_dict(),
        "calibration": {
            "live": float(live.mean() / ctr),
            "candidate": float(candidate.mean() / ctr),
        },
    }


def decide(experiment: Experiment, settings: ExperimentSpec, found: dict) -> tuple[str, str]:
    """(decision, why) for tonight's look; `experiment.looks` and `stage_looks` count tonight."""
    if experiment.mode == "shadow":
        return _decide_shadow(experiment, settings, found.get("shadow"))
    split, lift, arms = found["sample_ratio"], found["lift"], found["arms"]
    out_of_time = experiment.looks >= settings.max_nights
    if split["broken"]:
        why = (
            f"sample-ratio mismatch: {split['observed_share']:.4f} of units in the candidate "
            f"for a share of {split['expected_share']:.4f} (p = {split['p_value']:.2g})"
        )
        return ("inconclusive", why + "; out of nights") if out_of_time else ("blocked", why)
    fewest = min(arms[ab_test.LIVE]["units"], arms[ab_test.CANDIDATE]["units"])
    if lift is not None and fewest >= settings.min_units:
        low, high = lift["sequence_low"], lift["sequence_high"]
        shown = f"lift {lift['value']:+.2%} [{low:+.2%}, {high:+.2%}]"
        if experiment.mode == "aa":
            if low > 0 or high < 0:
                return "blocked", f"A/A arms differ: {shown}; the split or the logging is broken"
        elif high < 0:
            return "rollback", f"worse than live: {shown}"
        elif low > -settings.margin and experiment.stage == len(_shares(experiment, settings)):
            return "promote", f"not worse than live by more than {settings.margin:.1%}: {shown}"
    if out_of_time:
        return "inconclusive", f"no decision after {experiment.looks} night(s)"
    if fewest < settings.min_units:
        return "waiting", f"{fewest} unit(s) in the smaller arm, {settings.min_units} needed"
    ramps = experiment.mode != "aa" and experiment.stage < len(_shares(experiment, settings))
    if ramps and experiment.stage_looks >= settings.stage_nights:
        return "ramp", f"{experiment.stage_looks} night(s) at {experiment.share:.1%}, no harm"
    return "continue", "undecided: the interval still spans the margin"


def _shares(experiment: Experiment, settings: ExperimentSpec) -> tuple[float, ...]:
    return tuple(experiment.settings.get("shares", settings.shares))


def _decide_shadow(
    experiment: Experiment, settings: ExperimentSpec, shadow: dict | None
) -> tuple[str, str]:
    if experiment.stage_looks < settings.shadow_nights:
        return "continue", f"shadow night {experiment.stage_looks} of {settings.shadow_nights}"
    paired = (shadow or {}).get("paired")
    if paired is None:
        return "canary", "shadow rows too few to compare; on to the first share"
    auc, logloss = paired["auc"], paired["logloss"]
    if auc["high"] < 0 and logloss["low"] > 0:
        return "rollback", (
            f"worse on the served rows: AUC {auc['value']:+.4f}, Logloss {logloss['value']:+.4f}"
        )
    return "canary", f"shadow AUC {auc['value']:+.4f}, Logloss {logloss['value']:+.4f}"
