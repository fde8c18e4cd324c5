"""`python -m benchmarks.adapt_verdict [--quick] [--out FILE]`: every adapter against the
unadapted version between two retrains, measured so that recalibration cannot inflate it and
with every method tuned alike (docs/RESULTS.md section 6).

For each drift level (none; trend 1, shift 0.5; trend 2, shift 1) and world seed (1, 2, 3):
`reloop synth --days 5` with that intra-day drift, ingested with `pipelines/sample.toml`, v1
trained with bce on days 1-3; for each projection seed (0, 1, 2) every adapter is tuned on day 4
(`experiments/tuning.py`: the same budget for each, the lowest Logloss kept) and day 5 is
replayed in 24 slots with labels after 1 h. ReLoop2 runs with each of its three keys
(`reloop2[hidden]`, `[preactivation]`, `[standardized]`), each tuned alike.

Per drift level and adapter: the within-slot AUC difference (the mean over slots of the
paired per-slot difference), gAUC by user within slot, the per-slot Logloss difference, the
per-slot calibration error (|log Σp/Σy|) difference and the pooled AUC difference (which
includes between-slot calibration), each the mean over worlds of the mean over projection
seeds, with a Student t interval across the worlds; how many world x seed runs alone were
above / below zero; and ReLoop2's occupancy. Written as JSON, and printed as the markdown
tables of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

from reloop_cli.data.ingest import ingest
from reloop_cli.evaluation import statistics
from reloop_cli.experiments.replay import ReplayRequest, replay_day
from reloop_cli.experiments.synth import SynthConfig, synthesize
from reloop_cli.experiments.tuning import tune_adapters
from reloop_cli.spec.pipeline import load_spec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import train_version

REPO = Path(__file__).resolve().parents[1]
DRIFTS = {"none": (0.0, 0.0), "trend 1, shift 0.5": (1.0, 0.5), "trend 2, shift 1": (2.0, 1.0)}
ADAPTERS = ("intercept", "field_bias", "incremental", "reloop2+incremental")
KEYS = ("standardized", "hidden", "preactivation")  # the default first: composed runs use it
FIGURES = ("auc", "gauc", "logloss")


def calibration_error(slots: list[dict], name: str) -> dict:
    """How far the adapter's Σp/Σy is from 1, per slot, against the version's: the mean over
    slots with a click of |log Σp/Σy| (adapter) - |log Σp/Σy| (base), a t interval over the
    slots. Negative: better calibrated hour by hour, what recalibration should be credited for."""
    differences = [
        abs(math.log(slot[name]["calibration"])) - abs(math.log(slot["base"]["calibration"]))
        for slot in slots
        if slot["base"]["clicks"] and slot[name]["calibration"] > 0
    ]
    return statistics.across_repeats(differences).to_dict()


def one_world(root: Path, world: int, drift: tuple[float, float], rows: int, seeds, budget):
    """Every adapter's figures in one world, per projection seed."""
    trend, shift = drift
    config = SynthConfig(
        days=5, rows_per_day=rows, seed=world, intraday_trend=trend, intraday_base_shift=shift
    )
    files = synthesize(config, root / "raw")
    spec = load_spec(REPO / "pipelines" / "sample.toml")
    ws = Workspace(root / "ws")
    ingest(ws, spec, files)
    with Registry(ws) as registry:
        version = train_version(ws, registry, spec.override("train", loss="bce"), "2024-01-03")
    runs = []
    for seed in seeds:
        figures, chosen, occupancy = {}, {}, {}
        for key in KEYS:  # ReLoop2 with each key; the other adapters once, with the first
            keyed = spec.override("adapt", memory_key=key)
            names = ("reloop2", *ADAPTERS) if key == KEYS[0] else ("reloop2",)
            tune = ReplayRequest(version.version, "2024-01-04", adapters=names, seed=seed)
            tuned = tune_adapters(ws, keyed, tune, budget)
            day = ReplayRequest(version.version, "2024-01-05", adapters=names, seed=seed)
            result = replay_day(ws, tuned.spec, day)
            for name in names:
                label = f"reloop2[{key}]" if name == "reloop2" else name
                figures[label] = {
                    **{f: result.within_slot[name][f] for f in FIGURES},
                    "pooled_auc": result.pooled[name]["vs_base"]["auc"],
                    "calibration": calibration_error(result.slots, name),
                }
                chosen[label] = tuned.chosen.get(name, {})
                if name == "reloop2":
                    occupancy[label] = result.occupancy[name]
        base = result.pooled["base"]
        runs.append(
            {
                "world": world,
                "seed": seed,
                "base_auc": base["auc"]["value"],
                "calibration": base["calibration"],
                "figures": figures,
                "chosen": chosen,
                "occupancy": occupancy,
            }
        )
    return runs


def summarise(runs: list[dict]) -> dict:
    """Per adapter: each figure's mean over the worlds of the mean over their projection seeds,
    with a t interval across the worlds (the worlds' spread, with the seeds' noise in each
    world's mean: repeats within one world are not independent draws of a world); and the runs
    alone above / below zero (their own interval)."""
    out = {}
    worlds = sorted({r["world"] for r in runs})
    for name in runs[0]["figures"]:
        entry = {}
        present = [
            f for f in (*FIGURES, "pooled_auc", "calibration") if f in runs[0]["figures"][name]
        ]
        for figure in present:
            values = [r["figures"][name][figure] for r in runs if r["figures"][name][figure]]
            per_world = []
            for world in worlds:
                own = [
                    r["figures"][name][figure]["value"]
                    for r in runs
                    if r["world"] == world and r["figures"][name][figure]
                ]
                if own:
                    per_world.append(sum(own) / len(own))
            entry[figure] = statistics.across_repeats(per_world).to_dict()
            entry[f"{figure}_up"] = sum(v["low"] > 0 for v in values)
            entry[f"{figure}_down"] = sum(v["high"] < 0 for v in values)
            entry[f"{figure}_runs"] = len(values)
        if name.startswith("reloop2["):
            filled = [r["occupancy"][name] for r in runs]
            entry["occupancy"] = {
                key: sum(f[key] for f in filled) / len(filled)
                for key in ("buckets_used_mean", "rows_per_read_p50", "empty_read_share")
            }
            entry["buckets_per_array"] = filled[0]["buckets_per_array"]
        out[name] = entry
    return out


def markdown(level: str, summary: dict, runs: list[dict]) -> str:
    def cell(entry: dict, figure: str) -> str:
        return statistics.format_interval(entry[figure], signed=True)

    first = [r for r in runs if r["seed"] == runs[0]["seed"]]
    bases = ", ".join(f"{r['base_auc']:.4f}" for r in first)
    lines = [
        f"{level}: base AUC per world {bases}",
        "| adapter | AUC - base, within slot | gAUC - base (user in slot) | Logloss - base "
        "(per slot) | calibration error - base (per slot) | pooled AUC - base "
        "| runs within-slot AUC up / down | memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in summary.items():
        memory = ""
        if "occupancy" in entry:
            filled = entry["occupancy"]
            memory = (
                f"{filled['buckets_used_mean']:,.0f} of {entry['buckets_per_array']:,} buckets; "
                f"p50 {filled['rows_per_read_p50']:,.0f} rows/read"
            )
        lines.append(
            f"| {name} | {cell(entry, 'auc')} | {cell(entry, 'gauc')} | {cell(entry, 'logloss')} "
            f"| {cell(entry, 'calibration') if 'calibration' in entry else 'n/a'} "
            f"| {cell(entry, 'pooled_auc')} | {entry['auc_up']} / {entry['auc_down']} of "
            f"{entry['auc_runs']} | {memory} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one world, one seed, small days")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--tables", type=Path, help="print the tables of a saved run, no more")
    args = parser.parse_args(argv)
    if args.tables:
        saved = json.loads(args.tables.read_text(encoding="utf-8"))
        for level, entry in saved["levels"].items():
            print(markdown(level, summarise(entry["runs"]), entry["runs"]) + "\n")
        return saved
    worlds, seeds = ((1,), (0,)) if args.quick else ((1, 2, 3), (0, 1, 2))
    rows, budget = (3_000, 2) if args.quick else (30_000, 8)
    drifts = dict(list(DRIFTS.items())[-1:]) if args.quick else DRIFTS
    started, payload = time.time(), {"levels": {}}
    for level, drift in drifts.items():
        runs = []
        for world in worlds:
            root = Path(tempfile.mkdtemp(prefix="reloop-verdict-"))
            try:
                runs += one_world(root, world, drift, rows, seeds, budget)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(f"{level}: world {world} done ({time.time() - started:.0f} s)", flush=True)
        summary = summarise(runs)
        payload["levels"][level] = {"summary": summary, "runs": runs}
        print(markdown(level, summary, runs), flush=True)
    payload["seconds"] = round(time.time() - started, 1)
    payload["setup"] = {"worlds": worlds, "seeds": seeds, "rows_per_day": rows, "budget": budget}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return payload


if __name__ == "__main__":
    main()
