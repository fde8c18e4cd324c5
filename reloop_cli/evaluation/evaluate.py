"""`reloop eval`: how well a version predicted a day it did not train on.

The version's scores for the day are joined to the logged labels on impression id; the oracle
(the simulator's true click probability, where the logs carry it) is scored the same way so the
gap to the best achievable AUC/Logloss is visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import polars as pl

from reloop_cli.columns import IMPRESSION_ID, LABEL, ORACLE, PCTR
from reloop_cli.evaluation.compare import offpolicy_ctr
from reloop_cli.evaluation.metrics import DayMetrics, calibration_buckets, summarise
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.score import score_day


@dataclass
class EvalResult:
    version: int
    day: str
    metrics: DayMetrics
    oracle: dict[str, float] | None = None
    calibration: list[dict] = field(default_factory=list)
    offpolicy: dict | None = None  # the version's online CTR from the day's logged slates

    def to_dict(self) -> dict:
        return asdict(self)


def labelled_scores(ws: Workspace, version: int, day: str) -> pl.DataFrame:
    """A version's stored scores for a day beside the logged labels (and the oracle, if the logs
    carry one), joined on impression id."""
    logs = ws.scan_logs([day])
    has_oracle = ORACLE in logs.collect_schema().names()
    columns = [IMPRESSION_ID, LABEL, *([ORACLE] if has_oracle else [])]
    return (
        logs.select(columns)
        .join(ws.scan_scores(version, day), on=IMPRESSION_ID, how="inner", maintain_order="left")
        .collect()
    )


def evaluate_day(
    ws: Workspace, registry: Registry, version: int, day: str, with_offpolicy: bool = False
) -> EvalResult:
    """Score (if not yet scored) and measure one day; the metrics go to the registry too. With
    `with_offpolicy`, where the day has logged slates, also the version's online CTR estimated
    off-policy from them."""
    score_day(ws, version, day)
    joined = labelled_scores(ws, version, day)
    has_oracle = ORACLE in joined.columns
    label = joined[LABEL].cast(pl.Float64).to_numpy()
    pctr = joined[PCTR].cast(pl.Float64).to_numpy()
    metrics = summarise(label, pctr)
    oracle = None
    if has_oracle and joined[ORACLE].null_count() == 0:
        oracle_summary = summarise(label, joined[ORACLE].to_numpy())
        oracle = {"auc": oracle_summary.auc, "logloss": oracle_summary.logloss}
    registry.record_metrics(version, day, {**metrics.to_dict(), "oracle": oracle})
    estimate = None
    if with_offpolicy:
        estimate = offpolicy_ctr(ws, day, {"version": version})
    return EvalResult(version, day, metrics, oracle, calibration_buckets(label, pctr), estimate)
