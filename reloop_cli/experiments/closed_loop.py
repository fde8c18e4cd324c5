"""`reloop simulate --closed-loop`: each arm's model decides what its users see, and tomorrow's
training data is made of what it chose (the feedback loop ReLoop is named after).

Each day of a simulated world (`reloop synth`'s, seed `world`):
1. the world brings `requests` (a user, an hour, a device), each with `candidates` distinct items
   from its live pool, drawn by popularity;
2. mode `paired`: every arm serves every request in its own copy of the world (the same
   requests, candidates and click draws: lower variance); mode `ab`: each request goes to one
   arm, drawn at random (seeded), as an online A/B test splits traffic;
3. an arm's live version scores its requests' candidates (all as if at position 1, as a ranker
   does), its policy (`policies.py`) fills the slots, logging each pick's propensity beside the
   served pCTR; clicks are drawn from the world's true probability at the shown position;
4. each arm ingests only its own served logs (its own workspace, `arms/<arm>/`), is evaluated on
   them offline (next-day AUC: the version never trained on them), and trains its next version
   with its served pCTR as ỹ_last;
5. the oracle (the world's true top N) and a random policy serve the same requests, as ceiling
   and floor;
6. off-policy evaluation: the arm's new version, trained without a seeded holdout slice of the
   day's requests, has its online CTR estimated from the live policy's logs of that slice
   (`offpolicy.py`) and set against what the simulator knows its policy would have had on the
   same requests: the estimator's error.
Day 0 is served at random for every arm; its logs train each arm's first version (bce).
Online figures: CTR of the served impressions (realised clicks, Wilson interval) and its
expectation (the mean true probability of what was shown, free of click noise), clicks per
request, regret (the oracle's expected clicks per request minus the arm's), and the Gini
coefficient of impressions over the day's candidate items (exposure concentration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from reloop_cli.columns import DAY, PCTR, REQUEST_ID
from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from reloop_cli.evaluation import offpolicy, policies, statistics
from reloop_cli.evaluation.evaluate import evaluate_day
from reloop_cli.experiments.adapted_serving import check_adapter, serve_adapted, split_arm
from reloop_cli.experiments.online import ClosedLoopResult, difference, online_figures
from reloop_cli.experiments.synth import SynthConfig, World
from reloop_cli.experiments.traffic import (
    Requests,
    candidate_rows,
    served_logs,
    slate_rows,
    true_probabilities,
)
from reloop_cli.operations.gate import judge_offpolicy
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.sections import LOSSES
from reloop_cli.store.registry import Registry, VersionStatus
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import Lineage, train_version
from reloop_cli.versions.checkpoint import load_version
from reloop_cli.versions.score import predict_frame

MODES = ("paired", "ab")
CHAIN = "closed-loop"


@dataclass(frozen=True)
class ClosedLoopConfig:
    """What one closed-loop run simulates."""

    days: int = 14  # days served by trained versions (day 0, served at random, comes first)
    requests: int = 6_000  # a day's requests (6,000 x 5 slots: the sample's 30,000 rows)
    candidates: int = 20
    policy: policies.Policy = field(default_factory=policies.Policy)
    mode: str = "paired"
    world: int = 0  # the synth world's seed
    seed: int = 0  # exploration draws and the A/B split
    clip: float = offpolicy.DEFAULT_CLIP
    # Within each day (synth's --intraday-*): the day's new items rise, the base rate moves.
    intraday_trend: float = 0.0
    intraday_base_shift: float = 0.0
    label_delay_seconds: float = 3_600.0  # an adapted arm's labels arrive this late
    users: int = 300  # the world's users (synth's): an experiment randomises them into arms

    def validate(self, arms: list[str]) -> ClosedLoopConfig:
        if self.mode not in MODES:
            raise BadInput(f"mode: '{self.mode}' is not one of {', '.join(MODES)}")
        if self.days < 1 or self.requests < len(arms) or self.candidates < 1:
            raise BadInput("closed loop: days >= 1, requests >= arms and candidates >= 1")
        unknown = [a for a in arms if split_arm(a)[0] not in LOSSES]
        if unknown:
            raise BadInput(f"arms: {','.join(unknown)} not among {', '.join(LOSSES)}")
        for arm in arms:
            check_adapter(arm)
        if self.label_delay_seconds < 0:
            raise BadInput("label_delay: must be >= 0")
        if self.users < 1:
            raise BadInput("users: must be >= 1")
        self.policy.validate(self.candidates)
        return self

    def world_config(self) -> SynthConfig:
        return SynthConfig(
            seed=self.world,
            intraday_trend=self.intraday_trend,
            intraday_base_shift=self.intraday_base_shift,
            users=self.users,
        )


def serving_spec(spec: Spec) -> Spec:
    """The spec an arm's workspace ingests its served logs with: the world's fields, plus the
    served pCTR (ỹ_last, `last_source = "served"`), request id and propensity."""
    data = spec.override(
        "data",
        label="click",
        time_column="ts",
        impression_id="impression_id",
        oracle="true_ctr",
        pctr="pctr",
        request_id="request_id",
        propensity="propensity",
    )
    return data.override("train", last_source="served")


@dataclass
class Arm:
    """One arm: its loss, its own workspace and registry, its live version."""

    name: str  # a loss, or loss+adapter ('bce+reloop2': `adapted_serving.py`)
    ws: Workspace
    registry: Registry | None = None  # opened when the loop starts
    live: int | None = None

    @property
    def loss(self) -> str:
        return split_arm(self.name)[0]

    @property
    def adapter(self) -> str | None:
        return split_arm(self.name)[1]


def version_scores(arm: Arm, world: World, requests: Requests) -> np.ndarray:
    """[requests, candidates] pCTR of the arm's live version (uniform before it has one)."""
    n, k = requests.items.shape
    if arm.live is None:
        return np.full((n, k), 0.5)
    loaded = load_version(arm.ws, arm.live)
    scored = predict_frame(loaded, arm.ws, candidate_rows(world, requests).lazy())
    return scored[PCTR].to_numpy().astype(np.float64).reshape(n, k)


def policy_truth(
    world: World, requests: Requests, scores: np.ndarray, policy: policies.Policy, seed: list[int]
) -> float:
    """A version's expected online CTR on these requests, known to the simulator: its policy
    run 4 times over them, the true probabilities of what it showed averaged."""
    rng = np.random.default_rng(seed)
    draws = [policies.serve(policy, scores, rng)[0] for _ in range(4)]
    return float(np.mean([true_probabilities(world, requests, shown).mean() for shown in draws]))


def run_closed_loop(
    root: Workspace,
    spec: Spec,
    arms: list[str],
    config: ClosedLoopConfig,
    on_step: Callable[[str], None] = lambda _: None,
) -> ClosedLoopResult:
    """The closed loop in world `config.world`, each arm in `root/closed-loop/world-W/arms/`;
    call under `root`'s lock."""
    config.validate(arms)
    world = World(config.world_config())
    spec = serving_spec(spec)
    states = {name: Arm(name, root.closed_loop_arm(config.world, name)) for name in arms}
    baseline = "bce" if "bce" in arms else arms[0]
    online: dict[str, list[dict]] = {name: [] for name in [*arms, "oracle", "random"]}
    lifts: dict[str, list[dict]] = {name: [] for name in arms if name != baseline}
    request_clicks: dict[str, list[np.ndarray]] = {name: [] for name in arms}
    days = []
    try:
        for state in states.values():
            state.ws.root.mkdir(parents=True, exist_ok=True)
            state.registry = Registry(state.ws)
            state.ws.write_json(config.policy.__dict__, state.ws.slate_policy_path)
        for index in range(config.days + 1):
            day = (np.datetime64(world.config.start_date) + np.timedelta64(index, "D")).astype(str)
            days.append(day)
            requests = draw_requests(world, index, day, config)
            per_request = _references(world, requests, config, online)
            split = _split(config, len(arms), len(requests), index)
            for position, state in enumerate(states.values()):
                rows = split[position]
                on_step(f"day {index} ({day}): {state.name} serves {len(rows):,} requests")
                clicks = _serve_day(
                    world,
                    requests.subset(rows),
                    state,
                    spec,
                    config,
                    0 if config.mode == "paired" else position + 1,  # paired: shared draws
                    online[state.name],
                    per_request["oracle_expected"][rows],
                    last=index == config.days,
                )
                per_request[state.name] = (rows, clicks.sum(axis=1))
                request_clicks[state.name].append(clicks.sum(axis=1))
            paired = config.mode == "paired"
            for name in lifts:
                base, mine = per_request[baseline][1], per_request[name][1]
                lift = difference(base, mine, paired, config.policy.slots)
                lifts[name].append({"day": day, "ctr": lift})
            world.advance(index + 1)
    finally:
        for state in states.values():
            if state.registry is not None:
                state.registry.close()
    return ClosedLoopResult(config, arms, days, online, baseline, lifts, request_clicks)


def draw_requests(world: World, index: int, day: str, config: ClosedLoopConfig) -> Requests:
    """Day `index`'s requests, candidates and click draws, from the world's own generator:
    every loop over this world (in process or over HTTP) sees the same ones."""
    drawn = world.requests(index, config.requests)
    items = world.candidates(index, config.requests, config.candidates)
    uniforms = world.rng.random((config.requests, config.policy.slots))
    return Requests(
        day,
        index,
        np.arange(config.requests),
        drawn["user"],
        drawn["hour"],
        drawn["device"],
        drawn["ts"],
        items,
        uniforms,
    )


def _split(config: ClosedLoopConfig, arms: int, requests: int, index: int) -> list[np.ndarray]:
    """Which requests each arm serves: all (paired), or a seeded random share (A/B)."""
    if config.mode == "paired":
        return [np.arange(requests)] * arms
    group = np.random.default_rng([config.seed, config.world, index, 1_000]).integers(
        0, arms, requests
    )
    return [np.flatnonzero(group == a) for a in range(arms)]


def _references(world: World, requests: Requests, config: ClosedLoopConfig, online: dict) -> dict:
    """The oracle and a random policy on every request: the ceiling and the floor."""
    n, k = requests.items.shape
    slots = config.policy.slots
    at_top = world.click_probability(
        requests.user[:, None],
        requests.items,
        requests.hour[:, None],
        requests.device[:, None],
        np.ones((1, k)),
        day=requests.index,
    )
    rng = np.random.default_rng([config.seed, config.world, requests.index, 2_000])
    shown = {
        "oracle": policies.top(at_top, slots),
        "random": policies.serve(policies.random_policy(slots), at_top, rng)[0],
    }
    pool = np.unique(requests.items)
    per_request = {}
    for name, picked in shown.items():
        truth = true_probabilities(world, requests, picked)
        clicks = requests.uniforms < truth
        items = requests.items[np.arange(n)[:, None], picked]
        online[name].append({"day": requests.day, **online_figures(clicks, truth, items, pool)})
        per_request[name] = (np.arange(n), clicks.sum(axis=1))
        per_request[f"{name}_expected"] = truth.sum(axis=1)
    return per_request


def _serve_day(
    world: World,
    requests: Requests,
    state: Arm,
    spec: Spec,
    config: ClosedLoopConfig,
    stream: int,
    records: list[dict],
    oracle_expected: np.ndarray,
    last: bool,
) -> np.ndarray:
    """One arm's day: serve, log, learn. Returns the [requests, slots] clicks it got."""
    explored = state.live is None  # day 0: nothing to rank with yet
    policy = policies.random_policy(config.policy.slots) if explored else config.policy
    rng = np.random.default_rng([config.seed, config.world, requests.index, stream])
    if state.adapter is not None and not explored:  # hour by hour, corrected as labels arrive
        adapted = serve_adapted(
            state.ws,
            state.live,
            world,
            requests,
            spec,
            state.adapter,
            policy,
            rng,
            config.label_delay_seconds,
            config.seed,
        )
        shown, propensity, pctr = adapted.shown, adapted.propensity, adapted.pctr
    else:
        scores = version_scores(state, world, requests)
        shown, propensity = policies.serve(policy, scores, rng)
        pctr = None if explored else np.take_along_axis(scores, shown, axis=1)
    truth = true_probabilities(world, requests, shown)
    clicks = requests.uniforms < truth
    logs = served_logs(world, requests, shown, propensity, pctr, truth, clicks, state.name)
    served = state.ws.served / f"{requests.day}.parquet"
    state.ws.write_parquet(logs, served)
    ingest(state.ws, spec, [served])
    slates = slate_rows(world, requests, shown)
    state.ws.write_parquet(slates, state.ws.slate_dir(requests.day) / "part-0.parquet")
    items = requests.items[np.arange(len(requests))[:, None], shown]
    record = {
        "day": requests.day,
        "version": state.live,
        "requests": len(requests),
        **online_figures(clicks, truth, items, np.unique(requests.items)),
        "regret": float(oracle_expected.mean() - truth.sum(axis=1).mean()),
    }
    if state.live is not None:  # offline: the live version on its own served logs
        metrics = evaluate_day(state.ws, state.registry, state.live, requests.day).metrics
        record.update(
            auc=metrics.auc,
            auc_low=metrics.auc_low,
            auc_high=metrics.auc_high,
            logloss=metrics.logloss,
        )
    if not last:  # the next version; on the last day no newer day is left to serve it
        _learn(world, requests, state, spec, config, shown, propensity, clicks, record)
    records.append(record)
    return clicks


def _learn(
    world: World,
    requests: Requests,
    state: Arm,
    spec: Spec,
    config: ClosedLoopConfig,
    shown: np.ndarray,
    propensity: np.ndarray,
    clicks: np.ndarray,
    record: dict,
) -> None:
    """Train the arm's next version on its own logs, but for a seeded holdout slice of the
    day's requests (`gate.holdout_fraction`, as `reloop run` keeps one); estimate its online CTR
    off-policy on that slice and set it against the truth there; with
    `gate.metric = "snips_ctr"`, promote it only through that gate."""
    loss = state.loss if state.live is not None else "bce"
    rng = np.random.default_rng([config.seed, config.world, requests.index, 4_000])
    held = rng.random(len(requests)) < spec.gate.holdout_fraction
    held_ids = [f"{requests.day}-r{r}" for r in requests.ids[held]]
    exclude = (pl.col(DAY) == requests.day) & pl.col(REQUEST_ID).is_in(held_ids)
    trained = train_version(
        state.ws,
        state.registry,
        spec.override("train", loss=loss),
        requests.day,
        Lineage(CHAIN, parent=state.live, use_live_parent=False, promote=False),
        exclude=exclude,
    )
    promote = True
    if held.any() and (config.policy.kind == "softmax" or config.policy.epsilon > 0):  # OPE
        holdout = requests.subset(np.flatnonzero(held))  # needs exploration to have support
        candidate = version_scores(replace(state, live=trained.version), world, holdout)
        target = policies.logged_probabilities(config.policy, candidate, shown[held])
        estimate = offpolicy.estimate(clicks[held], propensity[held], target, config.clip)
        actual = policy_truth(
            world,
            holdout,
            candidate,
            config.policy,
            [config.seed, config.world, requests.index, 3_000],
        )
        record["ope"] = estimate.to_dict()
        record["ope_truth_ctr"] = actual
        record["ope_error"] = estimate.snips_ctr.value - actual
        if spec.gate.metric == "snips_ctr" and state.live is not None:
            observed = statistics.mean_estimate(clicks[held].mean(axis=1))
            decision = judge_offpolicy(estimate.snips_ctr, observed, spec.gate)
            record["gate"] = decision.to_dict()
            promote = decision.passed
    if promote:
        state.registry.set_live(CHAIN, trained.version)
        state.live = trained.version
    else:
        state.registry.decide(trained.version, VersionStatus.REJECTED, record["gate"])
