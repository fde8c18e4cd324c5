"""`reloop compare`: is version B better than version A on the same rows, or is it noise?

Both versions score the day (stored scores are reused); their predictions are lined up with the
labels on impression id and compared with paired tests (`statistics.paired`): DeLong's test for
the AUC difference, the mean per-row difference for Logloss. Pairing removes the rows' own
difficulty from the comparison, so it detects far smaller differences than two separate
intervals would.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from reloop_cli.columns import IMPRESSION_ID, LABEL, PCTR
from reloop_cli.errors import BadInput
from reloop_cli.evaluation import statistics
from reloop_cli.evaluation.metrics import DayMetrics, summarise
from reloop_cli.evaluation.slates import LoggedDay, has_slates
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.score import score_day


@dataclass
class Comparison:
    """B minus A on one day's rows, with each side's own metrics."""

    a: int
    b: int
    day: str
    metrics_a: DayMetrics
    metrics_b: DayMetrics
    difference: statistics.Paired
    offpolicy: dict | None = None  # where the day has logged slates: each version's online CTR

    @property
    def detectable_auc_difference(self) -> float:
        """The smallest AUC difference this paired comparison finds with 80% power."""
        return statistics.detectable_difference(
            self.difference.auc.se, self.difference.auc.confidence
        )

    def verdicts(self) -> dict[str, str]:
        return {
            "auc": statistics.verdict(self.difference.auc, higher_is_better=True),
            "logloss": statistics.verdict(self.difference.logloss, higher_is_better=False),
        }

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "day": self.day,
            "metrics_a": self.metrics_a.to_dict(),
            "metrics_b": self.metrics_b.to_dict(),
            "difference": self.difference.to_dict(),
            "detectable_auc_difference": self.detectable_auc_difference,
            "verdict": self.verdicts(),
            "offpolicy": self.offpolicy,
        }


def scores_side_by_side(ws: Workspace, versions: dict[str, int], day: str) -> pl.DataFrame:
    """The day's labels with one pCTR column per name, on the rows every version scored."""
    joined = ws.scan_logs([day]).select(IMPRESSION_ID, LABEL)
    for name, version in versions.items():
        scores = ws.scan_scores(version, day).select(IMPRESSION_ID, pl.col(PCTR).alias(name))
        joined = joined.join(scores, on=IMPRESSION_ID, how="inner", maintain_order="left")
    return joined.collect()


def compare_frame(
    frame: pl.DataFrame, a: str, b: str, confidence: float = statistics.CONFIDENCE
) -> statistics.Paired:
    """Paired tests of column `b` against column `a` on a frame with a label column."""
    label = frame[LABEL].cast(pl.Float64).to_numpy()
    return statistics.paired(
        label,
        frame[a].cast(pl.Float64).to_numpy(),
        frame[b].cast(pl.Float64).to_numpy(),
        confidence,
    )


def compare_versions(
    ws: Workspace, a: int, b: int, day: str, confidence: float = statistics.CONFIDENCE
) -> Comparison:
    """Score `day` with both versions (if not scored yet) and compare B against A; call under
    the workspace lock."""
    if a == b:
        raise BadInput(f"compare: give two different versions (got v{a} twice)")
    for version in (a, b):
        score_day(ws, version, day)
    names = {"a": a, "b": b}
    frame = scores_side_by_side(ws, names, day)
    if frame.height == 0:
        raise BadInput(f"compare: v{a} and v{b} scored no common rows of {day}")
    label = frame[LABEL].cast(pl.Float64).to_numpy()
    return Comparison(
        a,
        b,
        day,
        summarise(label, frame["a"].to_numpy()),
        summarise(label, frame["b"].to_numpy()),
        compare_frame(frame, "a", "b", confidence),
        offpolicy_ctr(ws, day, {"a": a, "b": b}),
    )


def offpolicy_ctr(ws: Workspace, day: str, versions: dict[str, int]) -> dict | None:
    """Each version's online CTR estimated from the day's logged slates (IPS and SNIPS), and
    the logging policy's observed CTR; None where the day has no slates."""
    if not has_slates(ws, day):
        return None
    logged = LoggedDay(ws, day)
    out = {name: logged.estimate(ws, version).to_dict() for name, version in versions.items()}
    return {**out, "logging_ctr": logged.observed().to_dict(), "policy": logged.policy.__dict__}
