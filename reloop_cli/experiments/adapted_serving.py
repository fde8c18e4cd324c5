"""A closed-loop arm with an adapter (`reloop simulate --closed-loop --arms bce,bce+reloop2`):
its version corrected between retrains by what the day's shown impressions did, so the adapted
model decides what users see and online CTR measures it.

The day is served in `SLOTS` hourly slots, in time order, as `reloop replay` replays one: at the
start of a slot the adapter receives every shown impression whose label has arrived (shown at
least `label_delay` seconds before), then corrects the slot's candidates; the serving policy
picks from the corrected scores. The adapter starts empty each day, when the night's version
goes live (a version that was not promoted keeps serving, and its adapter starts over too, as
a restarted server's would). What is logged for training is the version's own pCTR of what was
shown (ỹ_last), as `reloop serve` logs `served_pctr` beside `adapted_pctr`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reloop_cli.adapt.base import Adapter, Rows
from reloop_cli.adapt.from_spec import bias_fields, make_adapter
from reloop_cli.adapt.keys import score_with_keys, training_key_stats
from reloop_cli.errors import BadInput
from reloop_cli.evaluation import policies
from reloop_cli.experiments.replay import DAY_SECONDS, labels_arrived, slot_index
from reloop_cli.experiments.synth import World
from reloop_cli.experiments.traffic import Requests, candidate_rows, true_probabilities
from reloop_cli.features.encoding import TensorTable
from reloop_cli.spec.adapt import ADAPTERS
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version

SLOTS = 24


@dataclass
class AdaptedDay:
    """What an adapted arm served: per request its shown candidates, their propensities, the
    version's own pCTR of them (logged) and what the adapter made of it."""

    shown: np.ndarray  # [requests, slots]
    propensity: np.ndarray
    pctr: np.ndarray  # the version's
    adapted: np.ndarray


def split_arm(name: str) -> tuple[str, str | None]:
    """'bce+reloop2' -> ('bce', 'reloop2'); 'bce' -> ('bce', None)."""
    loss, _, adapter = name.partition("+")
    return loss, adapter or None


def check_adapter(name: str) -> None:
    """A one-line error for an arm whose adapter part is not an adapter."""
    adapter = split_arm(name)[1]
    if adapter is not None and (adapter not in ADAPTERS or adapter == "base"):
        raise BadInput(f"arms: '{name}': the adapter '{adapter}' is not one of {ADAPTERS[1:]}")


@dataclass
class ScoredCandidates:
    """A day's candidates as the version scored them, flat (request r's candidate c is cell
    r·k + c): what the adapter reads for any of them."""

    pctr: np.ndarray
    keys: np.ndarray
    table: TensorTable
    values: dict[str, np.ndarray]
    k: int

    def rows(self, cells: np.ndarray) -> Rows:
        return Rows(
            pctr=self.pctr[cells],
            keys=self.keys[cells],
            categorical=self.table.categorical[cells],
            dense=self.table.dense[cells],
            values={name: column[cells] for name, column in self.values.items()},
        )


def serve_adapted(
    ws: Workspace,
    version: int,
    world: World,
    requests: Requests,
    spec: Spec,
    adapter_name: str,
    policy: policies.Policy,
    rng: np.random.Generator,
    label_delay: float,
    seed: int,
) -> AdaptedDay:
    """One day of an adapted arm's serving (the version `version` live all day)."""
    loaded = load_version(ws, version)
    n, k = requests.items.shape
    frame = candidate_rows(world, requests)
    kind = spec.adapt.memory_key  # the memory hashes the key replay and serving hash
    stats = training_key_stats(ws, loaded) if kind == "standardized" else None
    pctr, keys, table = score_with_keys(ws, loaded, frame.lazy(), kind, stats)
    values = {name: frame[name].cast(str).to_numpy() for name in bias_fields(spec)}
    scored = ScoredCandidates(pctr, keys, table, values, k)
    adapter = make_adapter(adapter_name, spec, loaded.model, keys.shape[1], seed, stats)
    adapter.reset()
    corrected = np.zeros((n, k))
    shown = np.zeros((n, policy.slots), np.int64)
    propensity = np.zeros((n, policy.slots))
    midnight = world.day_start(requests.index)
    slot_of = slot_index(requests.ts, midnight, SLOTS)
    order = np.argsort(requests.ts, kind="stable")  # requests in time order
    shown_at = requests.ts[order]
    handed = 0  # a prefix of `order` has had its labels handed over
    for slot in range(SLOTS):
        ready = labels_arrived(shown_at, midnight + slot * DAY_SECONDS / SLOTS, label_delay)
        if ready > handed:
            _hand_over(adapter, order[handed:ready], requests, shown, world, scored)
            handed = ready
        rows = np.flatnonzero(slot_of == slot)
        if rows.size == 0:
            continue
        cells = (rows[:, None] * k + np.arange(k)[None, :]).reshape(-1)
        corrected[rows] = adapter.predict(scored.rows(cells)).reshape(-1, k)
        shown[rows], propensity[rows] = policies.serve(policy, corrected[rows], rng)
    pick = np.arange(n)[:, None]
    scores = pctr.reshape(n, k)
    return AdaptedDay(shown, propensity, scores[pick, shown], corrected[pick, shown])


def _hand_over(
    adapter: Adapter,
    ready: np.ndarray,
    requests: Requests,
    shown: np.ndarray,
    world: World,
    scored: ScoredCandidates,
) -> None:
    """Give the adapter the shown impressions of the `ready` requests, labelled with the
    clicks the world draws for them (the same draws the arm's own clicks come from)."""
    picked = shown[ready]
    truth = true_probabilities(world, requests.subset(ready), picked)
    batch = scored.rows((ready[:, None] * scored.k + picked).reshape(-1))
    batch.labels = (requests.uniforms[ready] < truth).astype(np.float64).reshape(-1)
    adapter.observe(batch)
