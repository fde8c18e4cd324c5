"""`python -m benchmarks.adapt_memory [--quick]`: what ReLoop2's error memory costs, side by side
in one run: its bytes, the latency it adds per scored row and its write throughput, and
`/score` p99 at 100 candidates with the memory on against the same server with it off, at two
settings: the K and L that `reloop replay --tune-day` chooses on the benchmark's own workspace
(v1 tuned on day 2, the budget replay uses), the largest its grid offers (K 128, L 16, a bound
on any tuned memory) where tuning chose less, and the spec's default.

- Per row: `ErrorMemory.predict` on requests of 100 rows (hash, read, attend, blend) timed
  against the base, which returns its input, over keys of the sample model's last hidden
  layer width (32); writes are `observe` on batches of 5,000 labelled rows.
- In process: `Service.score` (parse, encode, forward, memory, slate, log) in a loop on the
  same requests, the three services in turn, so the memory's own cost shows without HTTP.
- /score: `reloop serve --trust-client-time` on loopback, one process, one torch thread, the
  bundled sample's v1; each request carries a time 9 s after the one before, so from the
  200th request on every request also writes the impressions whose 30-minute attribution
  window closed (the steady state of a day: reads and writes both). Same requests, same
  server settings, the adapter off and on; one client (no queueing), the three servers
  measured in turn over several rounds, the median round reported.

The load generator shares the machine's cores with the server: loopback figures, for the
ratio, not a capacity plan.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.serve_load import build_workspace, load, median_rounds, request_bodies
from reloop_cli.adapt.base import Rows
from reloop_cli.adapt.error_memory import ErrorMemory, MemorySettings
from reloop_cli.experiments.live_server import ServerProcess
from reloop_cli.serving.app import limit_threads

KEY_DIM = 32  # the sample DeepFM's last hidden layer (its pre-activation, standardised)
LARGEST = (128, 16)  # the tuning grid's largest K and L
SPACING_SECONDS = 9.0  # 200 requests per 30-minute attribution window


def rows(n: int, seed: int, labelled: bool) -> Rows:
    rng = np.random.default_rng(seed)
    return Rows(
        pctr=rng.uniform(0.02, 0.3, n),
        keys=rng.standard_normal((n, KEY_DIM)).astype(np.float32),
        categorical=torch.zeros((n, 0), dtype=torch.long),
        dense=torch.zeros((n, 0)),
        labels=rng.integers(0, 2, n).astype(np.float64) if labelled else None,
    )


def tuned_memory(ws, spec, quick: bool) -> dict:
    """ReLoop2's settings as `reloop replay --tune-day` chooses them: v1 on the second day."""
    from reloop_cli.experiments.replay import ReplayRequest
    from reloop_cli.experiments.tuning import DEFAULT_BUDGET, tune_adapters

    request = ReplayRequest(version=1, day=ws.days()[1], adapters=("reloop2",)).validate()
    tuned = tune_adapters(ws, spec, request, 2 if quick else DEFAULT_BUDGET)
    return tuned.chosen["reloop2"]


def settings_env(arrays: int, bits: int) -> dict[str, str]:
    return {
        "RELOOP_SERVING_ADAPTER": "reloop2",
        "RELOOP_ADAPT_MEMORY_ARRAYS": str(arrays),
        "RELOOP_ADAPT_MEMORY_BITS": str(bits),
    }


def per_row(arrays: int, bits: int, quick: bool) -> dict:
    """Bytes, µs added per scored row (100-row requests), labelled rows written per second."""
    memory = ErrorMemory(MemorySettings(arrays=arrays, bits=bits), KEY_DIM)
    writes = [rows(5_000, seed, True) for seed in range(2 if quick else 20)]
    started = time.perf_counter()
    for batch in writes:
        memory.observe(batch)
    write_per_s = sum(len(b) for b in writes) / (time.perf_counter() - started)
    queries = [rows(100, 1_000 + i, False) for i in range(20 if quick else 300)]
    for query in queries[:5]:
        memory.predict(query)
    timed = []
    for query in queries:
        started = time.perf_counter()
        memory.predict(query)
        timed.append(time.perf_counter() - started)
    return {
        "arrays": arrays,
        "bits": bits,
        "memory_bytes": memory.memory_bytes(),
        "added_us_per_row": float(np.median(timed)) / 100 * 1e6,
        "added_ms_per_100_rows_p99": float(np.percentile(timed, 99)) * 1e3,
        "write_rows_per_s": write_per_s,
    }


def score_p99(ws, args, settings: dict[str, tuple[int, int]]) -> dict:
    """/score at 100 candidates, the adapter off and on (each (K, L) of `settings`): the servers
    run side by side and are measured in turn, round after round (the median round is
    reported), so a slow spell of the machine falls on every arm alike."""
    import contextlib

    count = 200 if args.quick else 1_000
    rounds = 2 if args.quick else 5
    start = 1_704_240_000.0
    base_env = {"RELOOP_SERVING_FLUSH_ROWS": "20000"}
    arms = {"off": {}}
    for name, (arrays, bits) in settings.items():
        arms[name] = settings_env(arrays, bits)
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    extra = ("--threads", "1", "--trust-client-time")
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                ServerProcess(ws.root, extra, environment={**base_env, **env})
            )
            for name, env in arms.items()
        }
        for round_ in range(rounds):
            bodies = request_bodies(ws, 100, count, seed=100 + round_)
            for index, body in enumerate(bodies):  # the day goes on from round to round
                body["time"] = start + SPACING_SECONDS * (round_ * count + index)
            encoded = [json.dumps(b).encode() for b in bodies]
            for name, server in servers.items():
                runs[name].append(load(server.port, "/score", encoded, 1, 60))
    return median_rounds(runs)


def in_process(ws, spec, args, settings: dict[str, tuple[int, int]]) -> dict:
    """`Service.score` in a loop, the adapter off and on, the same bodies and times, arms in
    turn over rounds: the cost without HTTP, the event loop or a second process."""
    from reloop_cli.serving.requests import parse_score, read_json
    from reloop_cli.serving.service import Service, ServiceConfig

    count = 200 if args.quick else 1_000
    rounds = 2 if args.quick else 5
    specs = {"off": spec}
    for name, (arrays, bits) in settings.items():
        specs[name] = spec.override("serving", adapter="reloop2").override(
            "adapt", memory_arrays=arrays, memory_bits=bits
        )
    services = {}
    for name, served in specs.items():
        logs = Path(tempfile.mkdtemp(prefix="reloop-adapt-bench-logs-"))
        services[name] = Service(ServiceConfig(ws.serving, logs, served, trust_client_time=True))
        services[name].reload()
    fields, limits = spec.data.feature_fields, spec.serving
    runs: dict[str, list[float]] = {name: [] for name in specs}
    for round_ in range(rounds):
        bodies = request_bodies(ws, 100, count, seed=100 + round_)
        for index, body in enumerate(bodies):
            body["time"] = 1_704_240_000.0 + SPACING_SECONDS * (round_ * count + index)
        encoded = [json.dumps(b).encode() for b in bodies]
        for name, service in services.items():
            for body in encoded:
                started = time.perf_counter()
                service.score(
                    parse_score(read_json(body, limits), fields, limits, service.config.client_time)
                )
                runs[name].append(time.perf_counter() - started)
    for service in services.values():
        service.stop()
    return {
        name: {
            "p50_ms": float(np.percentile(np.array(lat) * 1e3, 50)),
            "p99_ms": float(np.percentile(np.array(lat) * 1e3, 99)),
        }
        for name, lat in runs.items()
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    limit_threads(1)  # torch and BLAS on one thread each, as `reloop serve --threads 1` runs
    root = Path(tempfile.mkdtemp(prefix="reloop-adapt-bench-"))
    try:
        ws, spec = build_workspace(root, args.quick)
        chosen = tuned_memory(ws, spec, args.quick)
        tuned = (int(chosen["memory_arrays"]), int(chosen["memory_bits"]))
        settings = {f"tuned_k{tuned[0]}_l{tuned[1]}": tuned}
        if tuned != LARGEST:
            settings[f"largest_k{LARGEST[0]}_l{LARGEST[1]}"] = LARGEST
        default = (spec.adapt.memory_arrays, spec.adapt.memory_bits)
        if default not in settings.values():
            settings[f"default_k{default[0]}_l{default[1]}"] = default
        figures: dict = {
            "tuned": chosen,
            "memory": [per_row(arrays, bits, args.quick) for arrays, bits in settings.values()],
        }
        figures["in_process"] = in_process(ws, spec, args, settings)
        figures["score"] = score_p99(ws, args, settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    render(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def render(figures: dict) -> None:
    chosen = ", ".join(f"{k.removeprefix('memory_')} {v}" for k, v in figures["tuned"].items())
    print(f"ReLoop2 tuned on day 2 of the sample (v1): {chosen}")
    print(f"ReLoop2's error memory, keys of {KEY_DIM} numbers (one thread):")
    for entry in figures["memory"]:
        print(
            f"  K {entry['arrays']:>3}, L {entry['bits']:>2}: "
            f"{entry['memory_bytes'] / 2**20:,.1f} MiB, "
            f"+{entry['added_us_per_row']:.1f} µs per scored row (median, 100-row requests; "
            f"p99 {entry['added_ms_per_100_rows_p99']:.2f} ms a request), "
            f"{entry['write_rows_per_s']:,.0f} labelled rows written/s"
        )
    inside = figures["in_process"]
    print("Service.score in process, 100 candidates: p50 / p99 ms")
    for name, result in inside.items():
        ratio = result["p99_ms"] / inside["off"]["p99_ms"]
        print(
            f"  {name:>20}: {result['p50_ms']:.2f} / {result['p99_ms']:.2f} ms, "
            f"p99 {ratio:.2f}x off"
        )
    score = figures["score"]
    off = score["off"]
    print(
        "POST /score, 100 candidates, loopback, one process: p50 / p99 ms from one client "
        "(median of the rounds)"
    )
    for name, result in score.items():
        ratio = result["p99_ms"] / off["p99_ms"]
        print(
            f"  {name:>20}: {result['p50_ms']:.2f} / {result['p99_ms']:.2f} ms, "
            f"{result['per_s']:,.0f}/s, p99 {ratio:.2f}x off"
            + (f" ({result['failures']} failed)" if result["failures"] else "")
        )


if __name__ == "__main__":
    main()
