"""What `reloop run --from-server` prints on a night an experiment starts: the experiment it
started, and the verdict of the one that ended before it (it used to print "experiment None")."""

from __future__ import annotations

from types import SimpleNamespace

from reloop_cli.cli.operate import _cycle_summary
from reloop_cli.operations.cycle import CycleOutcome, CycleResult

STARTED = {"id": "e2", "candidate": 3, "live": 2, "mode": "canary", "share": 0.05}


def _started_tonight(ended: dict | None = None) -> CycleResult:
    """A night whose candidate passed the gate and started experiment e2 (after `ended`)."""
    metrics = SimpleNamespace(rows=1_000, clicks=120, auc=0.71, logloss=0.31)
    gate = SimpleNamespace(
        candidate=metrics, difference=None, first_version=False, reasons=[], forced=False
    )
    return CycleResult(
        CycleOutcome.EXPERIMENT,
        day="2024-01-03",
        candidate=3,
        live_before=2,
        live_after=2,
        gate=gate,
        experiment=ended,
        experiment_started=STARTED,
    )


def test_a_night_that_starts_an_experiment_names_it():
    text = _cycle_summary(_started_tonight())
    assert "passed the gate; exposed to 5.0% of units in experiment e2 (canary)" in text
    assert "None" not in text


def test_a_night_that_ends_one_experiment_and_starts_the_next_says_both():
    ended = {
        "experiment": {"id": "e1", "looks": 3, "status": "rolled_back"},
        "decision": "rollback",
        "why": "the candidate is worse",
    }
    text = _cycle_summary(_started_tonight(ended))
    assert "experiment e1, night 3: rollback (the candidate is worse)" in text
    assert "exposed to 5.0% of units in experiment e2" in text
