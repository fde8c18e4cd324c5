"""`reloop simulate --seeds N --world-seeds M`: the loop again with other training seeds and, on
simulated data, in other worlds, and what holds across the repeats.

One run's pooled lift says whether the arms differed on those rows with those weights; it says
nothing about how much a different seed or a different world moves it. The honest statement
"ReLoop helps here" needs the lift's mean over repeats with its interval (Student's t), which is
what `RepeatsResult.summary` gives. Repeat i trains with seed `train.seed + i` and differs from
the others in nothing else; world W is `reloop synth --seed W` (world 0 is the bundled sample),
each in its own workspace under `worlds/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from reloop_cli.evaluation import statistics
from reloop_cli.experiments.simulate import PREFIX, SimulateResult, simulate
from reloop_cli.experiments.synth import SynthConfig, synthesize
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace


@dataclass
class RepeatsResult:
    """Every repeat's full result, and their summary."""

    repeats: list[SimulateResult]

    @property
    def baseline(self) -> str:
        return self.repeats[0].baseline

    def summary(self) -> dict[str, dict]:
        """Per arm: mean AUC and Logloss across repeats; per arm but the baseline, the pooled
        lift over it across repeats, how many repeats alone found it, and the verdict."""
        out: dict[str, dict] = {}
        for arm in self.repeats[0].arms:
            entry: dict = {
                "mean_auc": statistics.across_repeats([r.arms[arm].mean_auc for r in self.repeats]),
                "mean_logloss": statistics.across_repeats(
                    [r.arms[arm].mean_logloss for r in self.repeats]
                ),
            }
            if arm != self.baseline:
                for key, higher in (("auc", True), ("logloss", False)):
                    pooled = [getattr(r.comparisons[arm], key) for r in self.repeats]
                    lift = statistics.across_repeats([p.value for p in pooled])
                    entry[f"lift_{key}"] = lift
                    entry[f"repeats_{key}"] = statistics.tally(pooled, higher)
                    entry[f"verdict_{key}"] = statistics.verdict(lift, higher_is_better=higher)
            out[arm] = entry
        return out

    def to_dict(self) -> dict:
        summary = {
            arm: {k: v.to_dict() if isinstance(v, statistics.Estimate) else v for k, v in e.items()}
            for arm, e in self.summary().items()
        }
        return {
            "baseline": self.baseline,
            "seeds": sorted({r.seed for r in self.repeats}),
            "worlds": sorted({r.world for r in self.repeats if r.world is not None}),
            "summary": summary,
            "repeats": [r.to_dict() for r in self.repeats],
        }


def prepare_world(ws: Workspace, spec: Spec, world: int, days: int, rows_per_day: int) -> Workspace:
    """Simulate world `world` (`days` + 1 days) and ingest it into its own workspace; a world
    made before is made again byte for byte, so ingest finds nothing new."""
    place = ws.world(world)
    config = SynthConfig(days=days + 1, rows_per_day=rows_per_day, seed=world)
    files = synthesize(config, place.synth)
    ingest(place, spec, files)
    return place


def simulate_repeats(
    ws: Workspace,
    spec: Spec,
    days: int,
    arms: list[str],
    seeds: int,
    worlds: list[int] | None = None,
    rows_per_day: int = 30_000,
    on_step: Callable[[str], None] = lambda _: None,
) -> RepeatsResult:
    """The loop `seeds` times (seeds train.seed, +1, ...), in `ws` or in each simulated world;
    call under the workspace lock."""
    if seeds < 1:
        raise BadInput(f"seeds: {seeds} must be >= 1")
    if worlds is not None and not worlds:
        raise BadInput("world_seeds: give at least one world")
    places: list[tuple[int | None, Workspace]] = [(None, ws)]
    if worlds is not None:
        places = []
        for world in worlds:
            on_step(f"world {world}: simulating {days + 1} days of {rows_per_day:,} rows")
            places.append((world, prepare_world(ws, spec, world, days, rows_per_day)))
    repeats = []
    for world, place in places:
        with Registry(place) as registry:
            for offset in range(seeds):
                seed = spec.train.seed + offset
                prefix = PREFIX if seeds == 1 else f"{PREFIX}-s{seed}"
                where = f"world {world}, " if world is not None else ""
                result = simulate(
                    place,
                    registry,
                    spec.override("train", seed=seed),
                    days,
                    arms,
                    on_step=lambda text, w=where, s=seed: on_step(f"[{w}seed {s}] {text}"),
                    prefix=prefix,
                )
                result.world = world
                repeats.append(result)
    return RepeatsResult(repeats)
