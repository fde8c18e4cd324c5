"""The [experiment] section: how a candidate that passed the offline gate earns live traffic.

With `mode = "off"` (the default) the gate alone decides and a passing candidate goes live at
once, as before. With `mode = "canary"` it is published beside the live version at the first of
`shares`, routed by a stable hash of `unit`, and judged every night on the logged clicks
(docs/guides/experiments.md): rolled back when it is worse, moved to the next share after
`stage_nights` nights without harm, promoted at the last share when a confidence sequence shows it
is not worse by more than `margin`, and ended "inconclusive" after `max_nights`.
`shadow_nights` nights of shadow scoring (every request scored by both, only live shown) may
come first.
"""

from __future__ import annotations

from dataclasses import dataclass

from reloop_cli.spec.checks import check

EXPERIMENT_MODES = ("off", "canary")


@dataclass(frozen=True)
class ExperimentSpec:
    """Online promotion: canary shares, the randomisation unit and the sequential test."""

    mode: str = "off"  # off: the offline gate promotes; canary: online evidence does
    # The field naming a user in /score requests (in `context` or a candidate): a user sees one
    # arm for the whole experiment. Empty: `adapt.group_field`; a request without it (or a spec
    # with neither) is its own unit.
    unit: str = ""
    shares: tuple[float, ...] = (0.05, 0.5)  # the candidate's traffic share, stage by stage
    stage_nights: int = 1  # nights judged at a share, without harm, before the next share
    shadow_nights: int = 0  # nights of shadow scoring (candidate scored, never shown) first
    # Non-inferiority: the candidate goes live when its CTR is shown to be no more than this
    # fraction below live's (0.02: at most 2% lower, relative); 0 asks for "better".
    margin: float = 0.02
    alpha: float = 0.05  # the sequential test's level over every night looked at
    planned_units: int = 10_000  # units per stage the confidence sequence is tightest at
    min_units: int = 50  # per arm, before any decision
    max_nights: int = 14  # nights before an undecided experiment ends inconclusive
    srm_p: float = 0.001  # a split whose chi-square p-value is below this is broken

    def validate(self) -> None:
        check(
            self.mode in EXPERIMENT_MODES,
            "experiment.mode",
            f"'{self.mode}' is not one of {EXPERIMENT_MODES}",
        )
        check(len(self.shares) >= 1, "experiment.shares", "give at least one share")
        check(
            all(0.0 < s < 1.0 for s in self.shares),
            "experiment.shares",
            f"{list(self.shares)}: each in (0, 1)",
        )
        check(
            list(self.shares) == sorted(self.shares),
            "experiment.shares",
            f"{list(self.shares)}: must not decrease (a unit never leaves the candidate)",
        )
        check(0.0 <= self.margin < 1.0, "experiment.margin", "must be in [0, 1)")
        check(0.0 < self.alpha < 0.5, "experiment.alpha", "must be in (0, 0.5)")
        check(0.0 < self.srm_p < 0.5, "experiment.srm_p", "must be in (0, 0.5)")
        for key in ("stage_nights", "planned_units", "min_units", "max_nights"):
            check(getattr(self, key) >= 1, f"experiment.{key}", "must be >= 1")
        check(self.shadow_nights >= 0, "experiment.shadow_nights", "must be >= 0")
