"""Every adapter tuned alike for `reloop replay --tune-day`: on the same earlier day, with the
same budget of settings tried, by the same criterion, and the choice printed.

A comparison where one method is tuned and the others keep their defaults measures the tuning,
not the method. Each adapter has a grid of the settings that shape it (below); `budget` of them
(all, when the grid is no larger) are drawn without replacement by a seeded generator, each is
replayed on the tune day exactly as the reported day is replayed, and the one with the lowest
Logloss (a proper scoring rule: it credits ranking and calibration alike) is kept. The reported
day never enters: the choice depends on the tune day's rows alone (a test reproduces it bit for
bit). ReLoop2 over fine-tuning takes the two choices made for its parts, at no extra budget.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from reloop_cli.evaluation import statistics
from reloop_cli.experiments.replay import (
    ReplayRequest,
    build_adapters,
    load_day,
    replay_predictions,
)
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version

DEFAULT_BUDGET = 8

# Per adapter, the [adapt] settings tuned and the values each may take.
GRIDS: dict[str, dict[str, tuple]] = {
    "intercept": {"intercept_window_rows": (250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)},
    "field_bias": {"bias_half_life": (1.0, 2.0, 4.0, 8.0), "bias_prior_clicks": (2.0, 10.0)},
    "incremental": {
        "incremental_learning_rate": (1e-4, 3e-4, 1e-3, 3e-3),
        "incremental_batch_size": (256, 1_024),
    },
    "reloop2": {
        "memory_weight": (0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        "memory_bits": (8, 10, 12, 14, 16),
        "memory_arrays": (16, 32, 64, 128),
        "memory_temperature": (0.05, 0.1, 0.5, 1.0),
    },
}
COMPOSED = {"reloop2+incremental": ("incremental", "reloop2")}


@dataclass
class Tuned:
    """What tuning chose: the spec with every adapter's choice, and each adapter's trials."""

    spec: Spec
    chosen: dict[str, dict]
    trials: dict[str, list[dict]]

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "trials": self.trials}


def candidates(name: str, budget: int, seed: int) -> list[dict]:
    """`budget` settings of the adapter's grid, drawn without replacement (seeded), in the
    grid's order; the whole grid when it is no larger."""
    grid = GRIDS[name]
    product = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if len(product) <= budget:
        return product
    rng = np.random.default_rng([seed, sorted(GRIDS).index(name)])
    picked = np.sort(rng.choice(len(product), size=budget, replace=False))
    return [product[i] for i in picked]


def tune_adapters(
    ws: Workspace,
    spec: Spec,
    request: ReplayRequest,
    budget: int = DEFAULT_BUDGET,
) -> Tuned:
    """Choose every asked adapter's settings on `request.day` (an earlier day than the one
    reported): `budget` replays each, the lowest Logloss kept."""
    loaded = load_version(ws, request.version)
    day = load_day(ws, loaded, spec, request)
    names = [n for n in request.adapters if n in GRIDS]
    for composed, parts in COMPOSED.items():
        if composed in request.adapters:
            names += [p for p in parts if p not in names]
    chosen, trials, tuned = {}, {}, spec
    for name in names:
        results = []
        for settings in candidates(name, budget, request.seed):
            trial = spec.override("adapt", **settings)
            adapters = build_adapters(trial, loaded, day, (name,), request.seed)
            predicted = replay_predictions(day, adapters, request.label_delay_seconds)[name]
            loss = statistics.logloss_estimate(day.labels, predicted).value
            results.append({**settings, "logloss": loss})
        best = min(results, key=lambda r: r["logloss"])
        chosen[name] = {key: best[key] for key in GRIDS[name]}
        trials[name] = results
        tuned = tuned.override("adapt", **chosen[name])
    for composed, parts in COMPOSED.items():
        if composed in request.adapters:
            chosen[composed] = {k: v for part in parts for k, v in chosen[part].items()}
    return Tuned(tuned, chosen, trials)
