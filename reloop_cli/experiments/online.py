"""Online figures of a closed loop: what each policy's users clicked, how far from the oracle,
how concentrated its exposure, each arm against the baseline, and what holds across worlds.

- CTR of the served impressions (realised clicks, Wilson interval) and its expectation (the mean
  true click probability of what was shown: the same figure without click noise);
- clicks per request, and regret: the oracle's expected clicks per request minus the policy's;
- exposure concentration: the Gini coefficient of impressions over the day's candidate items;
- an arm against the baseline: per request on the same requests (paired mode) or between the
  two groups (A/B mode), per day and pooled over the days trained versions served;
- across worlds: means with Student's t intervals, and how many worlds alone found a lift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reloop_cli.evaluation import statistics
from reloop_cli.evaluation.metrics import gini

SUMMARY_KEYS = ("ctr", "expected_ctr", "clicks_per_request", "gini", "regret", "auc", "ope_error")


def rate(clicks: np.ndarray) -> dict:
    """CTR (Wilson interval) and clicks per request (normal interval) of [requests, slots]."""
    return {
        "impressions": int(clicks.size),
        "clicks": int(clicks.sum()),
        "ctr": statistics.proportion_estimate(int(clicks.sum()), int(clicks.size)).to_dict(),
        "clicks_per_request": statistics.mean_estimate(clicks.sum(axis=1)).to_dict(),
    }


def online_figures(
    clicks: np.ndarray, truth: np.ndarray, items: np.ndarray, pool: np.ndarray
) -> dict:
    """A policy's day: realised and expected CTR, clicks per request, exposure Gini."""
    counts = np.bincount(np.searchsorted(pool, items.reshape(-1)), minlength=pool.size)
    return {
        **rate(clicks),
        "expected_ctr": float(truth.mean()),
        "expected_clicks_per_request": float(truth.sum(axis=1).mean()),
        "gini": gini(counts),
    }


@dataclass
class ClosedLoopResult:
    """Per day: each arm's online and offline figures, the oracle's and random's, and each arm
    against the baseline."""

    config: Any  # closed_loop.ClosedLoopConfig (a dataclass)
    arms: list[str]
    days: list[str]
    online: dict[str, list[dict]]  # per policy (arms, "oracle", "random"): per-day figures
    baseline: str
    lifts: dict[str, list[dict]] = field(default_factory=dict)  # per arm, per day: vs baseline
    # Per arm, per day: each request's clicks (kept in memory for paired comparisons, not saved).
    request_clicks: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def pooled(self, arm: str, key: str = "ctr") -> statistics.Estimate:
        """The arm's CTR minus the baseline's, pooled over the days trained versions served."""
        return statistics.pooled([_estimate(d[key]) for d in self.lifts[arm][1:]])

    def mean(self, policy: str, key: str) -> float:
        """A figure's mean over the days trained versions served (day 0 was random for all),
        where the day has it (the last day trains nothing, so it has no off-policy error)."""
        values = [
            d[key]["value"] if isinstance(d[key], dict) else d[key]
            for d in self.online[policy][1:]
            if key in d
        ]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict:
        pooled = {arm: self.pooled(arm) for arm in self.lifts}
        return {
            "config": asdict(self.config),
            "arms": self.arms,
            "days": self.days,
            "baseline": self.baseline,
            "online": self.online,
            "lifts": self.lifts,
            "pooled": {
                arm: {"ctr": lift.to_dict(), "verdict": statistics.verdict(lift)}
                for arm, lift in pooled.items()
            },
            "means": {
                policy: {key: self.mean(policy, key) for key in SUMMARY_KEYS}
                for policy in self.online
            },
        }


def _estimate(entry: dict) -> statistics.Estimate:
    return statistics.Estimate(**entry)


def difference(a: np.ndarray, b: np.ndarray, paired: bool, slots: int) -> dict:
    """CTR of B minus A from per-request clicks: paired (the same requests) or two groups."""
    if paired:
        return statistics.mean_estimate((b - a) / slots, test=True).to_dict()
    first, second = statistics.mean_estimate(a / slots), statistics.mean_estimate(b / slots)
    se = float(np.hypot(first.se, second.se))
    return statistics.normal_estimate(second.value - first.value, se, test=True).to_dict()


def across_worlds(results: list[ClosedLoopResult]) -> dict:
    """What holds across worlds: each policy's mean figures (Student's t across worlds), each
    arm's pooled CTR lift over the baseline across worlds with its p-value and how many worlds
    alone found it, and the off-policy estimator's error over every arm-day logged by a trained
    policy (day 0, logged at random, apart: its weights are clipped hardest)."""
    first = results[0]
    policies = {
        policy: {
            key: statistics.across_repeats([r.mean(policy, key) for r in results]).to_dict()
            for key in SUMMARY_KEYS
            if not math.isnan(first.mean(policy, key))
        }
        for policy in first.online
    }
    lifts = {}
    for arm in first.lifts:
        pooled = [r.pooled(arm) for r in results]
        lift = statistics.across_repeats([p.value for p in pooled])
        lifts[arm] = {
            "ctr": lift.to_dict(),
            "worlds": statistics.tally(pooled),
            "verdict": statistics.verdict(lift)
            if len(results) > 1
            else statistics.verdict(pooled[0]),
        }
    errors = {"trained_logging": [], "random_logging": []}
    for result in results:
        for arm in result.arms:
            for index, day in enumerate(result.online[arm]):
                if "ope_error" in day:
                    errors["random_logging" if index == 0 else "trained_logging"].append(
                        day["ope_error"]
                    )
    ope = {
        name: {
            "mean_error": statistics.mean_estimate(np.array(values)).to_dict(),
            "mean_absolute_error": float(np.mean(np.abs(values))) if values else math.nan,
            "arm_days": len(values),
        }
        for name, values in errors.items()
    }
    return {
        "worlds": [r.config.world for r in results],
        "policies": policies,
        "lifts": lifts,
        "ope": ope,
    }
