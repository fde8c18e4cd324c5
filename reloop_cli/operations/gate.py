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

import numpy as np
import polars as pl

from reloop_cli.columns import IMPRESSION_ID, LABEL, REQUEST_ID
from reloop_cli.evaluation import statistics
from reloop_cli.evaluation.metrics import summarise
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.sections import GateSpec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version
from reloop_cli.versions.score import predict_frame

PASSED, REFUSED, INCONCLUSIVE = "passed", "refused", "inconclusive"


def holdout_expr(spec: Spec, day: str) -> pl.Expr:
    """A seeded, stable slice of `day`'s rows that the candidate never trains on: whole
    requests when the gate judges slates off-policy, else impressions."""
    key = REQUEST_ID if spec.gate.metric == "snips_ctr" else IMPRESSION_ID
    bucket = pl.col(key).hash(spec.train.seed + 1) % 10_000
    return (pl.col("day") == day) & (bucket < round(spec.gate.holdout_fraction * 10_000))


@dataclass
class Decision:
    """What the gate concluded, and why."""

    outcome: str  # passed | refused | inconclusive
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED


def judge(
    candidate: dict,
    live: dict | None,
    difference: statistics.Paired | None,
    gate: GateSpec,
) -> Decision:
    """The rule above, on the holdout metrics of both versions and their paired difference
    (candidate minus live)."""
    if candidate["clicks"] < gate.min_clicks:
        return Decision(
            INCONCLUSIVE,
            [
                f"the holdout has {candidate['clicks']} clicks, fewer than gate.min_clicks "
                f"{gate.min_clicks}: too few to judge"
            ],
        )
    reasons = []
    if live is None or difference is None:
        if not candidate["auc"] >= gate.min_auc:
            reasons.append(f"AUC {candidate['auc']:.4f} < min_auc {gate.min_auc}")
        if not candidate["logloss"] <= gate.max_logloss:
            reasons.append(f"Logloss {candidate['logloss']:.4f} > max_logloss {gate.max_logloss}")
        return Decision(REFUSED if reasons else PASSED, reasons)
    level = f"{gate.confidence:.0%}"
    auc, logloss = difference.auc, difference.logloss
    if not auc.low >= -gate.max_auc_drop:
        reasons.append(
            f"AUC vs live {_shown(auc)}: at {level} it may be more than gate.max_auc_drop "
            f"{gate.max_auc_drop} worse"
        )
    if not logloss.high <= gate.max_logloss_rise:
        reasons.append(
            f"Logloss vs live {_shown(logloss)}: at {level} it may be more than "
            f"gate.max_logloss_rise {gate.max_logloss_rise} worse"
        )
    return Decision(REFUSED if reasons else PASSED, reasons)


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
        return Decision(PASSED)
    return Decision(
        REFUSED,
        [
            f"CTR vs live {_shown(difference)}: at {gate.confidence:.0%} it may be more than "
            f"gate.max_ctr_drop {gate.max_ctr_drop} worse"
        ],
    )


def _shown(estimate: statistics.Estimate) -> str:
    return f"{estimate.value:+.4f} [{estimate.low:+.4f}, {estimate.high:+.4f}]"


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
) -> dict:
    """Judge `candidate` against `live` on `day`'s holdout; record both versions' holdout
    metrics; return the decision as the registry and the CLI keep it."""
    rows = holdout_predictions(ws, spec, candidate, day).rename({"pctr": "candidate"})
    label = rows[LABEL].cast(pl.Float64).to_numpy()
    candidate_metrics = summarise(label, rows["candidate"].to_numpy())
    registry.record_metrics(candidate, day, candidate_metrics, scope="holdout")
    live_metrics, difference = None, None
    if live is not None:
        served = holdout_predictions(ws, spec, live, day).select(
            IMPRESSION_ID, pl.col("pctr").alias("live")
        )
        rows = rows.join(served, on=IMPRESSION_ID, how="inner", maintain_order="left")
        label = rows[LABEL].cast(pl.Float64).to_numpy()
        live_metrics = summarise(label, rows["live"].to_numpy())
        registry.record_metrics(live, day, live_metrics, scope="holdout")
        difference = statistics.paired(
            label,
            np.asarray(rows["live"].to_numpy(), np.float64),
            np.asarray(rows["candidate"].to_numpy(), np.float64),
            spec.gate.confidence,
        )
    decision = judge(candidate_metrics, live_metrics, difference, spec.gate)
    offpolicy = None
    if spec.gate.metric == "snips_ctr" and live is not None and decision.outcome != INCONCLUSIVE:
        offpolicy, decision = _offpolicy_gate(ws, spec, candidate, day)
    return {
        "passed": decision.passed,
        "outcome": decision.outcome,
        "reasons": decision.reasons,
        "forced": force and not decision.passed,
        "first_version": live is None,
        "candidate": candidate_metrics,
        "live": live_metrics,
        "difference": difference.to_dict() if difference else None,
        "offpolicy": offpolicy,
        "rule": {
            "max_auc_drop": spec.gate.max_auc_drop,
            "max_logloss_rise": spec.gate.max_logloss_rise,
            "confidence": spec.gate.confidence,
            "min_clicks": spec.gate.min_clicks,
            "metric": spec.gate.metric,
        },
    }


def _offpolicy_gate(ws: Workspace, spec: Spec, candidate: int, day: str) -> tuple[dict, Decision]:
    """`gate.metric = "snips_ctr"`: the candidate's online CTR estimated from the live policy's
    logged slates of the holdout requests, against live's observed CTR on them."""
    from reloop_cli.evaluation.slates import LoggedDay

    held = ws.scan_logs([day]).filter(holdout_expr(spec, day)).select(REQUEST_ID).collect()
    logged = LoggedDay(ws, day, set(held[REQUEST_ID].to_list()))
    estimate, observed = logged.estimate(ws, candidate), logged.observed()
    decision = judge_offpolicy(estimate.snips_ctr, observed, spec.gate)
    return {"candidate": estimate.to_dict(), "live_observed_ctr": observed.to_dict()}, decision
