"""`reloop simulate`: the whole loop, day by day, one chain of versions per arm (loss).

Day 0 trains the first version with BCE; it is every arm's starting point. On each later day,
each arm's live version serves the day (scores it: its ỹ_last for tomorrow), is evaluated on it
(next-day AUC/Logloss: the version never trained on that day), and then the arm trains its next
version on the window ending that day, with its own loss and its own parent's predictions.

Every arm scores the same rows of a day, so each arm is compared with the baseline (bce) by
paired tests day by day, and over all days pooled (`statistics.pooled`). A single run still says
nothing about training noise: `simulate_repeats` runs the loop again with other training seeds
(and, on simulated data, other worlds) and summarises across the repeats.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reloop_cli.errors import BadInput
from reloop_cli.evaluation import statistics
from reloop_cli.evaluation.compare import compare_frame, scores_side_by_side
from reloop_cli.evaluation.evaluate import evaluate_day
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.sections import LOSSES
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import Lineage, train_version

PREFIX = "simulate"
BASELINE = "bce"


def chain_of(arm: str, prefix: str = PREFIX) -> str:
    return f"{prefix}-{arm}"


@dataclass
class ArmResult:
    # {"day", "version", "auc", "auc_low", ..., "logloss", ..., "seconds", "peak_rss_mib"}:
    # seconds = serve + evaluate + train; peak_rss_mib = the process's peak memory so far
    days: list[dict] = field(default_factory=list)

    @property
    def mean_auc(self) -> float:
        return sum(d["auc"] for d in self.days) / len(self.days)

    @property
    def mean_logloss(self) -> float:
        return sum(d["logloss"] for d in self.days) / len(self.days)


@dataclass
class ArmComparison:
    """One arm against the baseline on the same rows: per day, and over all days pooled."""

    days: list[dict] = field(default_factory=list)  # {"day", "auc": Estimate, "logloss": ...}
    auc: statistics.Estimate | None = None  # pooled over days
    logloss: statistics.Estimate | None = None

    def verdicts(self) -> dict[str, str]:
        return {
            "auc": statistics.verdict(self.auc, higher_is_better=True),
            "logloss": statistics.verdict(self.logloss, higher_is_better=False),
        }

    def to_dict(self) -> dict:
        return {
            "days": [
                {"day": d["day"], "auc": d["auc"].to_dict(), "logloss": d["logloss"].to_dict()}
                for d in self.days
            ],
            "pooled": {"auc": self.auc.to_dict(), "logloss": self.logloss.to_dict()},
            "detectable_auc_difference": statistics.detectable_difference(self.auc.se),
            "verdict": self.verdicts(),
        }


@dataclass
class SimulateResult:
    train_day: str
    days: list[str]
    arms: dict[str, ArmResult]
    oracle: list[dict] | None = None
    baseline: str = BASELINE
    comparisons: dict[str, ArmComparison] = field(default_factory=dict)
    seed: int = 0
    world: int | None = None  # the synth world's seed, when the loop ran on one it made

    def lift(self, arm: str, baseline: str = BASELINE) -> dict[str, float] | None:
        """Relative change of `arm` over `baseline` in mean AUC and mean Logloss, in percent."""
        if arm not in self.arms or baseline not in self.arms or arm == baseline:
            return None
        a, b = self.arms[arm], self.arms[baseline]
        return {
            "auc_pct": 100 * (a.mean_auc - b.mean_auc) / b.mean_auc,
            "logloss_pct": 100 * (a.mean_logloss - b.mean_logloss) / b.mean_logloss,
        }

    def to_dict(self) -> dict:
        return {
            "train_day": self.train_day,
            "days": self.days,
            "seed": self.seed,
            "world": self.world,
            "arms": {
                name: {"days": arm.days, "mean_auc": arm.mean_auc, "mean_logloss": arm.mean_logloss}
                for name, arm in self.arms.items()
            },
            "oracle": self.oracle,
            "lift_over_bce": {
                arm: lift for arm in self.arms if (lift := self.lift(arm)) is not None
            },
            "baseline": self.baseline,
            "comparisons": {arm: c.to_dict() for arm, c in self.comparisons.items()},
        }


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (the kernel's count; KiB on Linux)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024


def parse_arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in LOSSES]
    if not arms or unknown:
        shown = ",".join(unknown) or repr(text)
        raise BadInput(f"arms: {shown} not among {', '.join(LOSSES)}")
    return list(dict.fromkeys(arms))


def simulate(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    days: int,
    arms: list[str],
    on_step: Callable[[str], None] = lambda _: None,
    prefix: str = PREFIX,
) -> SimulateResult:
    """Run the loop over the first `days + 1` ingested days; call under the workspace lock.
    Chains are named `{prefix}-{arm}` (and `{prefix}-root` for the shared first version, which
    is never made live: each arm names it as its first parent). The loop keeps its own
    vocabulary (scope `prefix`), so a repeat starts from what its own days taught it."""
    available = ws.days()
    if days < 1:
        raise BadInput(f"days: {days} must be >= 1")
    if len(available) < days + 1:
        raise BadInput(
            f"{ws.root}: {days} days to simulate need {days + 1} ingested days (one to start), "
            f"found {len(available)}"
        )
    train_day, *eval_days = available[: days + 1]
    on_step(f"day 0 ({train_day}): training the first version (bce)")
    root = train_version(
        ws,
        registry,
        spec.override("train", loss="bce"),
        train_day,
        Lineage(chain_of("root", prefix), use_live_parent=False, promote=False, vocab_scope=prefix),
    )
    live = {arm: root.version for arm in arms}
    results = {arm: ArmResult() for arm in arms}
    baseline = BASELINE if BASELINE in arms else arms[0]
    comparisons = {arm: ArmComparison() for arm in arms if arm != baseline}
    oracle: list[dict] = []
    for index, day in enumerate(eval_days, start=1):
        for arm in arms:
            started = time.perf_counter()
            on_step(f"day {index} ({day}): {arm} v{live[arm]} serves and is evaluated")
            ev = evaluate_day(ws, registry, live[arm], day)
            registry.record_served(chain_of(arm, prefix), day, live[arm])
            record = {"day": day, "version": live[arm], **ev.metrics.to_dict()}
            results[arm].days.append(record)
            if ev.oracle and len(oracle) < index:
                oracle.append({"day": day, **ev.oracle})
            if index < len(eval_days):  # on the last day no newer day is left to judge it on
                on_step(f"day {index} ({day}): {arm} trains its next version")
                trained = train_version(
                    ws,
                    registry,
                    spec.override("train", loss=arm),
                    day,
                    Lineage(chain_of(arm, prefix), parent=live[arm], vocab_scope=prefix),
                )
                live[arm] = trained.version
            record["seconds"] = time.perf_counter() - started
            record["peak_rss_mib"] = peak_rss_mib()
        _compare_day(
            ws, day, {arm: results[arm].days[-1]["version"] for arm in arms}, baseline, comparisons
        )
    for comparison in comparisons.values():
        comparison.auc = statistics.pooled([d["auc"] for d in comparison.days])
        comparison.logloss = statistics.pooled([d["logloss"] for d in comparison.days])
    return SimulateResult(
        train_day,
        eval_days,
        results,
        oracle or None,
        baseline,
        comparisons,
        seed=spec.train.seed,
    )


def _compare_day(
    ws: Workspace,
    day: str,
    served_by: dict[str, int],
    baseline: str,
    comparisons: dict[str, ArmComparison],
) -> None:
    """Each arm against the baseline on the day's rows, which every arm's version scored."""
    if not comparisons:
        return
    frame = scores_side_by_side(ws, served_by, day)
    for arm, comparison in comparisons.items():
        difference = compare_frame(frame, baseline, arm)
        comparison.days.append({"day": day, "auc": difference.auc, "logloss": difference.logloss})
