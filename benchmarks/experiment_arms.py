"""`python -m benchmarks.experiment_arms [--quick]`: what an experiment costs `reloop serve`,
side by side in one run: `/score` p50 / p99 at 100 candidates with no experiment (the
single-arm path), with a canary at a 50% share (each request routed by its user to one of two
loaded versions), and with shadow scoring (every request encoded and scored by the candidate
too, its pCTR logged).

Three copies of one workspace (the bundled sample's v1 live, v2 the candidate), one server each,
one torch thread, measured in turn over several rounds with the same requests (the median round
reported), so a slow spell of the machine falls on every arm alike. Loopback figures, for the
ratio, not a capacity plan.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.serve_load import build_workspace, load, median_rounds, request_bodies
from reloop_cli.experiments.live_server import Client, ServerProcess, wait_for
from reloop_cli.operations.experiment import start_experiment
from reloop_cli.serving.app import limit_threads
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace

ARMS = ("one_arm", "canary_50", "shadow")


def prepare(root: Path, quick: bool) -> dict[str, Workspace]:
    ws, spec = build_workspace(root / "base", quick)
    spec = spec.override("experiment", unit="user_id", shares=(0.5,))
    ws.write_json(spec.to_dict(), ws.stored_spec_path)
    copies = {}
    for arm in ARMS:
        shutil.copytree(ws.root, root / arm)
        copy = Workspace(root / arm)
        if arm != "one_arm":
            with Registry(copy) as registry:
                start_experiment(copy, registry, spec, 2, shadow_nights=1 if arm == "shadow" else 0)
        copies[arm] = copy
    return copies


def measure(copies: dict[str, Workspace], quick: bool) -> dict:
    count, rounds = (200, 2) if quick else (1_000, 5)
    runs: dict[str, list[dict]] = {arm: [] for arm in copies}
    extra = ("--threads", "1")
    with contextlib.ExitStack() as stack:
        servers = {
            arm: stack.enter_context(
                ServerProcess(ws.root, extra, environment={"RELOOP_SERVING_FLUSH_ROWS": "20000"})
            )
            for arm, ws in copies.items()
        }
        for arm, server in servers.items():
            if arm != "one_arm":
                client = Client(server.port)
                wait_for(f"{arm} to route", lambda c=client: c.health().get("experiment"), 60)
                client.close()
        base = next(iter(copies.values()))
        for round_ in range(rounds):
            bodies = request_bodies(base, 100, count, seed=200 + round_)
            encoded = [json.dumps(b).encode() for b in bodies]
            for arm, server in servers.items():
                runs[arm].append(load(server.port, "/score", encoded, 1, 60))
    return median_rounds(runs)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    limit_threads(1)
    root = Path(tempfile.mkdtemp(prefix="reloop-arms-bench-"))
    try:
        figures = measure(prepare(root, args.quick), args.quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = figures["one_arm"]["p99_ms"]
    print("POST /score, 100 candidates, loopback, one process each: p50 / p99 ms (median round)")
    for arm, entry in figures.items():
        print(
            f"  {arm:>10}: {entry['p50_ms']:.2f} / {entry['p99_ms']:.2f} ms, "
            f"{entry['per_s']:.0f}/s, p99 {entry['p99_ms'] / base:.2f}x one arm, "
            f"{entry['failures']} failed"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
