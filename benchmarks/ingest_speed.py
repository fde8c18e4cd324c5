"""`python -m benchmarks.ingest_speed [--rows N] [--rounds R] [--against REV]`: ingest speed of
this tree against an earlier commit's, side by side in one run.

Both ingest the same CSV (a label, two categorical fields, an epoch-seconds time column: the log
of `python -m benchmarks`) into a fresh workspace, alternating old, new, old, new so that the
machine's noise falls on both alike; each round runs in its own process (the two trees are both
`reloop_cli`) and times the ingest call alone. The default `--against` is the commit before time
columns of every type landed (issue 12), the reference issue 24 measured against.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
BEFORE_TIME_HANDLING = "06281ef"

ROUND = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
try:
    from reloop_cli.data.ingest import ingest
    from reloop_cli.spec.pipeline import spec_from_dict
    from reloop_cli.store.workspace import Workspace
except ImportError:  # the flat layout before issue 21
    from reloop_cli.ingest import ingest
    from reloop_cli.spec import spec_from_dict
    from reloop_cli.workspace import Workspace
spec = spec_from_dict({"data": {"categorical": ["u", "i"], "time_column": "ts"}}, "bench")
started = time.perf_counter()
result = ingest(Workspace(sys.argv[3]), spec, [sys.argv[2]])
print(json.dumps({"seconds": time.perf_counter() - started, "rows": result.rows}))
"""


def write_log(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    pl.DataFrame(
        {
            "label": rng.integers(0, 2, rows),
            "u": rng.integers(0, 1000, rows),
            "i": rng.integers(0, 5000, rows),
            "ts": 1_704_067_200 + rng.integers(0, 86_400 * 3, rows),
        }
    ).write_csv(path)


def checkout(rev: str, into: Path) -> Path:
    """The package as it was at `rev` (git archive), importable from `into`."""
    archive = subprocess.run(
        ["git", "archive", rev, "reloop_cli"], cwd=REPO, capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def one_round(tree: Path, csv: Path, workspace: Path) -> float:
    shown = subprocess.run(
        [sys.executable, "-c", ROUND, str(tree), str(csv), str(workspace)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1_800,
    )
    return json.loads(shown.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", default=BEFORE_TIME_HANDLING)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = root / "log.csv"
        write_log(csv, args.rows)
        old = checkout(args.against, root / "old")
        trees = {"old": old, "new": REPO}
        seconds: dict[str, list[float]] = {"old": [], "new": []}
        for index in range(args.rounds):
            for name in ("old", "new"):
                seconds[name].append(one_round(trees[name], csv, root / f"ws-{name}-{index}"))
    rates = {name: [args.rows / s for s in values] for name, values in seconds.items()}
    ratios = [n / o for n, o in zip(rates["new"], rates["old"], strict=True)]
    figures = {
        "rows": args.rows,
        "against": args.against,
        "rows_per_s": rates,
        "new_over_old": statistics.median(ratios),
        "ratios": ratios,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name in ("old", "new"):
            shown = ", ".join(f"{r / 1e6:.2f}M" for r in rates[name])
            print(f"{name:>3} ({args.against if name == 'old' else 'this tree'}): {shown} rows/s")
        print(
            f"new / old, paired by round: median {figures['new_over_old']:.2f} "
            f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return figures


if __name__ == "__main__":
    main()
