"""`reloop simulate --closed-loop --over-http --online-policy`: the promotion policy of
`[experiment]` run with real processes in a synth world, and each candidate's verdicts set
against the world's truth.

The loop is `over_http.py`'s (a `reloop serve` process, a client that replays the world's
requests and clicks by its true probabilities, `reloop run --from-server` each night), with
`experiment.mode = "canary"`: a candidate that passes the offline gate is exposed to the first of
`experiment.shares` of users, judged every night on its logged clicks (`experiment_evidence.py`)
and promoted, rolled back or ended inconclusive; no new candidate is trained while one runs.

The truth: on every day a candidate waits for its verdict (the day after it was trained, and
each day its experiment runs), the simulator computes what the candidate and the live version it
is tested against would each get online on *all* of that day's requests: each version's policy
(epsilon-greedy or softmax, the same exploration draws for both) run over them, and the mean true
click probability of what it would show (`closed_loop.policy_truth`): free of click noise and
of the arm split. Its relative difference, averaged over those days, is the candidate's true
lift. A candidate is *truly worse* when it is below 0, *harmful* when it is below
`-experiment.margin` (what the non-inferiority test promises to keep out).

Two policies judged on the same candidates: the offline gate alone (it promotes every candidate
it passes: `experiment.mode = "off"`) and the online policy (a candidate must pass the gate and
then its experiment). `summarize` counts, over worlds, how often each promotes a truly better,
a truly worse and a harmful candidate, with Wilson intervals.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from reloop_cli.evaluation import statistics
from reloop_cli.experiments.closed_loop import (
    Arm,
    ClosedLoopConfig,
    policy_truth,
    version_scores,
)
from reloop_cli.experiments.live_server import Client
from reloop_cli.experiments.over_http import OverHttpConfig, serve_days, served_loop_spec
from reloop_cli.experiments.synth import World
from reloop_cli.experiments.traffic import Requests
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace

# Configuration faults a person could commit to a pipeline spec, each a candidate that may be
# truly worse: (section, field, value). With `plant_faults`, every second candidate is trained
# under the next of them (the stored spec edited for that night only).
FAULTS = (
    ("model", "name", "lr"),  # the backbone swapped for a logistic regression
    ("train", "learning_rate", 0.05),  # a learning rate 25 times the spec's
    ("model", "embedding_dim", 2),
    ("train", "window_days", 1),
)


@dataclass
class Candidate:
    """One candidate the loop trained: what the gate and its experiment said, and the truth."""

    version: int
    live: int  # the live version it was tested against
    day: str  # the day it was trained on
    gate: str  # passed | refused | inconclusive
    experiment: str | None = None  # its experiment's id (gate passed)
    online: str | None = None  # promoted | rolled_back | inconclusive | running (at the end)
    nights: int = 0  # nights its experiment was judged
    fault: str | None = None  # the planted configuration fault it was trained with, if any
    truth: list[dict] = field(default_factory=list)  # per day: both versions' expected CTR

    @property
    def true_lift(self) -> float:
        """The candidate's relative CTR difference from live, averaged over its days."""
        return float(np.mean([t["candidate"] / t["live"] - 1.0 for t in self.truth]))

    @property
    def deciding(self) -> bool:
        """Still waiting for its truth or its experiment's verdict."""
        return not self.truth or self.online == "running"

    def to_dict(self) -> dict:
        return {**asdict(self), "true_lift": self.true_lift if self.truth else None}


@dataclass
class PolicyResult:
    """One world: each day's online figures, each night's run, and every candidate."""

    world: int
    margin: float
    days: list[str]
    online: list[dict]
    runs: list[dict]
    candidates: list[Candidate]
    server_exit: int = 0

    def to_dict(self) -> dict:
        return {
            "world": self.world,
            "margin": self.margin,
            "days": self.days,
            "online": self.online,
            "runs": self.runs,
            "candidates": [c.to_dict() for c in self.candidates],
            "server_exit": self.server_exit,
        }


def policy_spec(spec: Spec, config: OverHttpConfig, unit: str | None = None) -> Spec:
    """The served loop's spec with online promotion on: the spec's [experiment] settings, in
    canary mode, randomising `unit` (None: the spec's unit, else users, `user_id`; "": each
    request)."""
    served = served_loop_spec(spec, config)
    unit = (served.experiment.unit or "user_id") if unit is None else unit
    experiment = dataclasses.replace(served.experiment, mode="canary", unit=unit)
    return dataclasses.replace(served, experiment=experiment).validate()


def run_online_policy(
    root: Workspace,
    spec: Spec,
    config: OverHttpConfig,
    on_step: Callable[[str], None] = lambda _: None,
    unit: str | None = None,
    plant_faults: bool = False,
) -> PolicyResult:
    """The policy in world `config.closed.world`, under `root/over-http/policy-world-W/`
    (replaced: the folder is this command's own); call under `root`'s lock."""
    closed = config.closed.validate([config.arm])
    ws = root.online_policy_world(closed.world)
    served = policy_spec(spec, config, unit)
    candidates: list[Candidate] = []

    def fault() -> tuple | None:
        """Tonight's fault: with `plant_faults`, every second candidate gets the next one
        (candidates only grow after a night, so before and after it this is the same)."""
        if not plant_faults or len(candidates) % 2 == 0:
            return None
        return FAULTS[(len(candidates) // 2) % len(FAULTS)]

    def before_night() -> None:
        if (planted := fault()) is not None:  # what tonight's run reads
            faulty = served.override(planted[0], **{planted[1]: planted[2]})
            ws.write_json(faulty.to_dict(), ws.stored_spec_path)

    def after_night(run: dict, day: str) -> None:
        planted, trained = fault(), len(candidates)
        _follow(run, day, candidates)
        if planted is not None:
            if len(candidates) > trained:
                candidates[-1].fault = "{}.{} = {}".format(*planted)
            ws.write_json(served.to_dict(), ws.stored_spec_path)

    found = serve_days(
        ws,
        served,
        closed,
        config.timeout_seconds,
        on_step,
        before_day=lambda world, requests: _assess(ws, world, requests, closed, candidates),
        before_night=before_night,
        after_night=after_night,
        ready=_serves,
    )
    return PolicyResult(
        closed.world,
        served.experiment.margin,
        found.days,
        found.online,
        found.runs,
        candidates,
        found.server_exit,
    )


def _follow(run: dict, day: str, candidates: list[Candidate]) -> None:
    """Record what tonight's run did: the running experiment's verdict, a new candidate."""
    look = run.get("experiment")
    if look is not None:
        experiment = look["experiment"]
        for candidate in candidates:
            if candidate.experiment == experiment["id"]:
                candidate.nights = experiment["looks"]
                candidate.online = experiment["status"]
    started = run.get("experiment_started")
    fresh = run.get("gate") is not None and run.get("live_before") is not None
    if fresh:  # a candidate was trained and judged against live tonight
        candidates.append(
            Candidate(
                version=run["candidate"],
                live=run["live_before"],
                day=day,
                gate=run["gate"],
                experiment=started["id"] if started else None,
                online="running" if started else None,
            )
        )


def _serves(client: Client, run: dict) -> bool:
    """The server serves the live version the run left, and routes its experiment (if any)."""
    health = client.health()
    started = run.get("experiment_started")
    look = run.get("experiment") or {}
    running = started or (
        look["experiment"] if look.get("experiment", {}).get("status") == "running" else None
    )
    routed = (health.get("experiment") or {}).get("experiment")
    live = run.get("live_after")
    return (live is None or health.get("version") == live) and routed == (
        running["id"] if running else None
    )


def _assess(
    ws: Workspace,
    world: World,
    requests: Requests,
    closed: ClosedLoopConfig,
    candidates: list[Candidate],
) -> None:
    """Today's truth for every candidate still deciding: each version's expected CTR on all of
    today's requests, under the same exploration draws."""
    for candidate in candidates:
        if not candidate.deciding:
            continue
        seed = [closed.seed, closed.world, requests.index, 5_000]
        truth = {}
        for name, version in (("candidate", candidate.version), ("live", candidate.live)):
            scores = version_scores(Arm(name, ws, live=version), world, requests)
            truth[name] = policy_truth(world, requests, scores, closed.policy, seed)
        candidate.truth.append({"day": requests.day, **truth})


def promotion_cell(row: dict) -> str:
    """One cell of the promotions table: 'promoted/of [low, high]' (Wilson, 95%)."""
    rate = row["rate"]
    interval = f" [{rate['low']:.2f}, {rate['high']:.2f}]" if rate else ""
    return f"{row['promoted']}/{row['of']}{interval}"


def summarize(results: list[PolicyResult]) -> dict:
    """Over worlds: how often each policy promotes candidates by their true lift, with Wilson
    intervals (candidates whose experiment was still running at the end are left out)."""
    judged = [c for r in results for c in r.candidates if c.truth and c.online != "running"]
    margin = results[0].margin if results else 0.0
    classes = {
        "better": [c for c in judged if c.true_lift > 0],
        "worse": [c for c in judged if c.true_lift < 0],
        "harmful": [c for c in judged if c.true_lift < -margin],
        "not_harmful": [c for c in judged if c.true_lift >= -margin],
    }
    policies = {
        "offline_gate": lambda c: c.gate == "passed",
        "online_policy": lambda c: c.online == "promoted",
    }
    table = {}
    for name, promoted in policies.items():
        table[name] = {}
        for label, group in classes.items():
            hits = sum(promoted(c) for c in group)
            rate = statistics.proportion_estimate(hits, len(group)) if group else None
            table[name][label] = {
                "promoted": hits,
                "of": len(group),
                "rate": rate.to_dict() if rate else None,  # with its Wilson interval
            }
    lifts = [c.true_lift for c in judged]
    return {
        "candidates": len(judged),
        "running_at_end": sum(c.online == "running" for r in results for c in r.candidates),
        "margin": margin,
        "true_lift": {
            "min": min(lifts, default=None),
            "median": float(np.median(lifts)) if lifts else None,
            "max": max(lifts, default=None),
        },
        # what each judged candidate's experiment ended in ("no experiment": the gate stopped it)
        "online_outcomes": dict(
            sorted(Counter(c.online or "no experiment" for c in judged).items())
        ),
        "promotions": table,
    }
