"""`python -m benchmarks.vocab_epoch [--rows N] [--rounds R] [--profile]`: one epoch of `reloop
train` when every value is new, against the same rows with few values, side by side in one run.

Two pairs of configurations, each pair the same rows at two table sizes, DeepFM (embedding 16,
MLP 400-400-400), bce, one epoch, no validation slice, from scratch, 300,000 rows over 2 days:
- 26 categorical fields (the issue-24 measurement), batch 1024: `distinct`, every value of every
  field once (300,000 x 26 = 7.8M table rows, sparse updates), against `few`, 1,000 values a
  field (26,000 table rows, dense updates);
- the sample's 6 fields (`reloop synth`), batch 4096, `user_id` and `item_id` hashed into B rows:
  `hashed-big`, B = 3,900,000 (7.8M table rows), against `hashed-small`, B = 13,000 (26,051).
The first pair's big table also holds 7.8M values (the vocabulary's work grows with them); the
second's holds few (only the table grows). Each is ingested into its own workspace once; then
`reloop train` runs on each in alternation, `--rounds` times, and the epoch's own seconds
(meta.json `history`) and the whole command's are printed with each pair's ratio. `--profile`
runs one more `distinct` training under cProfile and prints where the time went
(`python -m benchmarks.embeddings` times single steps).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from reloop_cli.data.ingest import ingest
from reloop_cli.experiments.synth import SynthConfig, synthesize
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import Lineage, train_version

FIELDS = [f"f{i:02d}" for i in range(26)]
DAY_SECONDS = 86_400


SAMPLE_FIELDS = ["user_id", "item_id", "category", "hour", "device", "position"]
PAIRS = {"26 fields": ("distinct", "few"), "6 fields, hashed": ("hashed-big", "hashed-small")}


def spec(config: str = "distinct"):
    """The spec of a configuration: 26 fields, or the sample's 6 with two hashed."""
    hashed = config.startswith("hashed")
    buckets = 3_900_000 if config == "hashed-big" else 13_000
    return spec_from_dict(
        {
            "name": "vocab-epoch",
            "data": {
                "label": "click",
                "categorical": SAMPLE_FIELDS if hashed else FIELDS,
                "time_column": "ts",
            },
            "model": {"name": "deepfm", "embedding_dim": 16, "hidden_units": [400, 400, 400]},
            "train": {
                "loss": "bce",
                "epochs": 1,
                "batch_size": 4096 if hashed else 1024,
                "validation_fraction": 0.0,
                "window_days": 2,
            },
            "vocabulary": (
                {"hash_buckets": {"user_id": buckets, "item_id": buckets}} if hashed else {}
            ),
        },
        "benchmarks/vocab_epoch",
    )


def write_sample_days(folder: Path, rows: int) -> list[Path]:
    """Two days of the sample's simulated feed (`reloop synth`), `rows` in all."""
    return synthesize(SynthConfig(days=2, rows_per_day=rows // 2, seed=0), folder)


def write_days(folder: Path, rows: int, values: int | None, seed: int = 0) -> list[Path]:
    """Two day files of `rows` in all; `values` per field (None: every value distinct)."""
    rng = np.random.default_rng(seed)
    paths = []
    per_day = rows // 2
    for day in range(2):
        index = np.arange(per_day) + day * per_day
        columns = {
            name: (
                pl.Series(index).cast(pl.String)
                if values is None
                else pl.Series(rng.integers(0, values, per_day)).cast(pl.String)
            )
            for name in FIELDS
        }
        frame = pl.DataFrame(
            {
                "ts": 1_704_067_200 + day * DAY_SECONDS + rng.integers(0, DAY_SECONDS, per_day),
                **columns,
                "click": (rng.random(per_day) < 0.1).astype(np.int8),
            }
        )
        path = folder / f"day-{day}.parquet"
        frame.write_parquet(path)
        paths.append(path)
    return paths


def train_once(ws: Workspace, config: str) -> dict:
    started = time.perf_counter()
    with Registry(ws) as registry:
        result = train_version(
            ws, registry, spec(config), "2024-01-02", Lineage(use_live_parent=False, promote=False)
        )
        meta = registry.version_meta(result.version)
    return {
        "epoch": result.history[0]["train_seconds"],
        "command": time.perf_counter() - started,
        "table_rows": sum(meta["field_sizes"]),
        "updates": meta["embedding_updates"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    values = {"distinct": None, "few": 1_000}
    configs = [name for pair in PAIRS.values() for name in pair]
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        spaces = {}
        for name in configs:
            folder = Path(tmp) / name
            folder.mkdir()
            spaces[name] = Workspace(folder / "ws")
            files = (
                write_sample_days(folder / "logs", args.rows)
                if name.startswith("hashed")
                else write_days(folder, args.rows, values[name])
            )
            ingest(spaces[name], spec(name), files)
        for _ in range(args.rounds):
            for name in configs:
                runs[name].append(train_once(spaces[name], name))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(train_once, spaces["distinct"], "distinct")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    figures = {
        name: {
            "table_rows": entries[0]["table_rows"],
            "updates": entries[0]["updates"],
            "epoch_seconds": [round(e["epoch"], 2) for e in entries],
            "command_seconds": [round(e["command"], 2) for e in entries],
        }
        for name, entries in runs.items()
    }
    figures["ratios"] = {
        pair: {
            key: statistics.median(
                b[key] / s[key] for b, s in zip(runs[big], runs[small], strict=True)
            )
            for key in ("epoch", "command")
        }
        for pair, (big, small) in PAIRS.items()
    }
    if args.json:
        print(json.dumps(figures))
        return figures
    for name in configs:
        entry = figures[name]
        print(
            f"{name:>12}: {entry['table_rows']:,} table rows ({entry['updates']}), epoch "
            f"{entry['epoch_seconds']} s, whole train {entry['command_seconds']} s"
        )
    for pair, (big, small) in PAIRS.items():
        ratio = figures["ratios"][pair]
        print(
            f"{pair}: {big} / {small}, paired by round: epoch {ratio['epoch']:.2f}x, "
            f"whole train {ratio['command']:.2f}x"
        )
    return figures


if __name__ == "__main__":
    main()
