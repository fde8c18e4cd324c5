"""The promotion gate of `reloop run`: may the candidate replace the live version?

Both versions score a seeded holdout slice of the newest day that the candidate never trained
on. The decision reads intervals, never bare point estimates:

- fewer than `gate.min_clicks` clicks in the holdout: **inconclusive**; the live version keeps
  serving and the run exits with its own code (5);
- the first version (nothing live): the absolute floors `gate.min_auc` and `gate.max_logloss`;
- otherwise **non-inferiority** on paired tests (same rows): promote when the lower end of the
  two-sided `gate.confidence` interval of AUC(candidate) - AUC(live) is above
  -`gate.max_auc_drop`, and the upper end of the Logloss difference is below
  `gate.max_logloss_rise`. A candidate is not required to be better (a daily model that is as
  good and fresher should serve), only shown not to be worse by more than the margins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import polars as pl

from reloop_cli.columns import DAY, IMPRESSION_ID, LABEL, PCTR, REQUEST_ID
from reloop_cli.evaluation import statistics
from reloop_cli.evaluation.metrics import DayMetrics, summarise
from reloop_cli.evaluation.slates import LoggedDay
from reloop_cli.features.hashing import SPLIT_METHOD, bucket_of
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.sections import GateSpec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version
from reloop_cli.versions.score import non_finite, predict_frame


class GateOutcome(str, Enum):
    """What the gate concluded about a candidate."""

    PASSED = "passed"
    REFUSED = "refused"
    INCONCLUSIVE = "inconclusive"  # too few holdout clicks to judge

    __str__ = str.__str__  # the value, in f-strings and JSON alike


def holdout_expr(spec: Spec, day: str) -> pl.Expr:
    """A seeded, stable slice of `day`'s rows that the candidate never trains on: whole
    requests when the gate judges slates off-policy, else impressions."""
    key = REQUEST_ID if spec.gate.metric == "snips_ctr" else IMPRESSION_ID
    bucket = bucket_of(key, spec.train.seed + 1)
    return (pl.col(DAY) == day) & (bucket < round(spec.gate.holdout_fraction * 10_000))


@dataclass
class Decision:
    """What the gate concluded, and why."""

    outcome: GateOutcome
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome == GateOutcome.PASSED

    def to_dict(self) -> dict:
        return {"outcome": self.outcome.value, "reasons": list(self.reasons)}


@dataclass
class GateVerdict:
    """The gate's verdict on one candidate, as `reloop run` prints it and the registry keeps it
    (`to_dict`): the decision, both versions' holdout metrics, their paired difference, the
    off-policy estimate where the gate used one, and the rule it applied."""

    decision: Decision
    forced: bool
    first_version: bool
    candidate: DayMetrics
    live: DayMetrics | None
    difference: statistics.Paired | None
    rule: GateSpec
    offpolicy: dict | None = None
    non_finite: int = 0  # holdout rows the candidate predicted NaN or inf for: never promoted

    @property
    def passed(self) -> bool:
        return self.decision.passed

    @property
    def outcome(self) -> GateOutcome:
        return self.decision.outcome

    @property
    def reasons(self) -> list[str]:
        return self.decision.reasons

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "outcome": self.outcome.value,
            "reasons": list(self.reasons),
            "forced": self.forced,
            "first_version": self.first_version,
            "candidate": self.candidate.to_dict(),
            "live": self.live.to_dict() if self.live else None,
            "difference": self.difference.to_dict() if self.difference else None,
            "offpolicy": self.offpolicy,
            "non_finite_predictions": self.non_finite,
            "rule": {
                "max_auc_drop": self.rule.max_auc_drop,
                "max_logloss_rise": self.rule.max_logloss_rise,
                "confidence": self.rule.confidence,
                "min_clicks": self.rule.min_clicks,
                "metric": self.rule.metric,
                "holdout_split": SPLIT_METHOD,
            },
        }


def judge(
    candidate: DayMetrics,
    live: DayMetrics | None,
    difference: statistics.Paired | None,
    gate: GateSpec,
) -> Decision:
    """The rule above, on the holdout metrics of both versions and their paired difference
    (candidate minus live)."""
    if candidate.clicks < gate.min_clicks:
        return Decision(
            GateOutcome.INCONCLUSIVE,
            [
                f"the holdout has {candidate.clicks} clicks, fewer than gate.min_clicks "
                f"{gate.min_clicks}: too few to judge"
            ],
        )
    reasons = []
    if live is None or difference is None:
        if not candidate.auc >= gate.min_auc:
            reasons.append(f"AUC {candidate.auc:.4f} < min_auc {gate.min_auc}")
        if not candidate.logloss <= gate.max_logloss:
            reasons.append(f"Logloss {candidate.logloss:.4f} > max_logloss {gate.max_logloss}")
        return Decision(GateOutcome.REFUSED if reasons else GateOutcome.PASSED, reasons)
    level = f"{gate.confidence:.0%}"
    auc, logloss = difference.auc, difference.logloss
    if not auc.low >= -gate.max_auc_drop:
        reasons.append(
            f"AUC vs live {statistics.format_interval(auc, signed=True)}: at {level} it may be "
            f"more than gate.max_auc_drop {gate.max_auc_drop} worse"
        )
    if not logloss.high <= gate.max_logloss_rise:
        reasons.append(
            f"Logloss vs live {statistics.format_interval(logloss, signed=True)}: at {level} it "
            f"may be more than gate.max_logloss_rise {gate.max_logloss_rise} worse"
        )
    return Decision(GateOutcome.REFUSED if reasons else GateOutcome.PASSED, reasons)


def judge_offpolicy(
    candidate: statistics.Estimate, live: statistics.Estimate, gate: GateSpec
) -> Decision:
    """`gate.metric = "snips_ctr"`: promote when the candidate's off-policy CTR estimate
    (SNIPS, from the live policy's logs) is, at `gate.confidence`, not below the live policy's
    observed CTR by more than `gate.max_ctr_drop` (the two treated as independent: a
    conservative interval)."""
    difference = statistics.normal_estimate(
        candidate.value - live.value, float(np.hypot(candidate.se, live.se)), gate.confidence
    )
    if difference.low >= -gate.max_ctr_drop:
        return Decision(GateOutcome.PASSED)
    return Decision(
        GateOutcome.REFUSED,
        [
            f"CTR vs live {statistics.format_interval(difference, signed=True)}: at "
            f"{gate.confidence:.0%} it may be more than gate.max_ctr_drop {gate.max_ctr_drop} worse"
        ],
    )


def holdout_predictions(ws: Workspace, spec: Spec, version: int, day: str) -> pl.DataFrame:
    """impression_id, label and the version's pctr on the day's holdout slice."""
    loaded = load_version(ws, version)
    rows = ws.scan_logs([day]).filter(holdout_expr(spec, day))
    scores = predict_frame(loaded, ws, rows)
    labels = rows.select(IMPRESSION_ID, LABEL).collect()
    return labels.join(scores, on=IMPRESSION_ID, maintain_order="left")


def run_gate(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    candidate: int,
    live: int | None,
    day: str,
    force: bool,
) -> GateVerdict:
    """Judge `candidate` against `live` on `day`'s holdout; record both versions' holdout
    metrics; return the verdict."""
    predicted = holdout_predictions(ws, spec, candidate, day)
    broken = non_finite(predicted)
    rows = predicted.rename({PCTR: "candidate"})
    label = rows[LABEL].cast(pl.Float64).to_numpy()
    candidate_metrics = summarise(label, rows["candidate"].to_numpy())
    registry.record_metrics(candidate, day, candidate_metrics.to_dict(), scope="holdout")
    live_metrics, difference = None, None
    if live is not None:
        served = holdout_predictions(ws, spec, live, day).select(
            IMPRESSION_ID, pl.col(PCTR).alias("live")
        )
        rows = rows.join(served, on=IMPRESSION_ID, how="inner", maintain_order="left")
        label = rows[LABEL].cast(pl.Float64).to_numpy()
        live_metrics = summarise(label, rows["live"].to_numpy())
        registry.record_metrics(live, day, live_metrics.to_dict(), scope="holdout")
        difference = statistics.paired(
            label,
            np.asarray(rows["live"].to_numpy(), np.float64),
            np.asarray(rows["candidate"].to_numpy(), np.float64),
            spec.gate.confidence,
        )
    decision = judge(candidate_metrics, live_metrics, difference, spec.gate)
    if broken:  # whatever the metrics say: a NaN pCTR must never serve
        decision = Decision(
            GateOutcome.REFUSED,
            [f"v{candidate} predicts a non-finite pCTR for {broken:,} of {rows.height:,} rows"],
        )
    offpolicy = None
    if (
        spec.gate.metric == "snips_ctr"
        and live is not None
        and decision.outcome != GateOutcome.INCONCLUSIVE
        and not broken
    ):
        offpolicy, decision = _offpolicy_gate(ws, spec, candidate, day)
    return GateVerdict(
        decision,
        forced=force and not decision.passed and not broken,
        first_version=live is None,
        candidate=candidate_metrics,
        live=live_metrics,
        difference=difference,
        rule=spec.gate,
        offpolicy=offpolicy,
        non_finite=broken,
    )


def _offpolicy_gate(ws: Workspace, spec: Spec, candidate: int, day: str) -> tuple[dict, Decision]:
    """`gate.metric = "snips_ctr"`: the candidate's online CTR estimated from the live policy's
    logged slates of the holdout requests, against live's observed CTR on them."""
    held = ws.scan_logs([day]).filter(holdout_expr(spec, day)).select(REQUEST_ID).collect()
    logged = LoggedDay(ws, day, set(held[REQUEST_ID].to_list()))
    estimate, observed = logged.estimate(ws, candidate), logged.observed()
    decision = judge_offpolicy(estimate.snips_ctr, observed, spec.gate)
    return {"candidate": estimate.to_dict(), "live_observed_ctr": observed.to_dict()}, decision
