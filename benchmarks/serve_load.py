"""`python -m benchmarks.serve_load [--quick] [--no-peer]`: `reloop serve` under a bounded load
on loopback, side by side in one run with the same requests scored in process (the limit) and
the same release served by MLflow's model server (`mlflow models serve --env-manager local`,
the peer a user would pick); then a hot swap under load, and the click join of a day of logs.

- Throughput and latency: for requests of 20, 100 and 500 candidates, a fixed number of POSTs
  (bounded in count and in time) from `--concurrency` client threads, each on its own
  keep-alive connection. Every server runs one process with one torch thread. The in-process
  figure is `Service.score` (parse, encode, forward, slate, log) called in a loop: the same work
  without HTTP. MLflow serves the same release (encoder and network) as a pyfunc "model from
  code" (no pickle), fed the same rows as `dataframe_records` (it has no request context, so
  each row carries the user's fields); it logs nothing, which favours it.
- Hot swap: the load runs while a second version is published; requests failed or dropped, the
  versions answered, and the worst latency around the swap against the p99 before it.
- Click join: a day of server logs (impressions and clicks, written by the server's own log
  writer) joined and ingested, rows/s, beside the ingest of the same labelled rows alone.

The load generator shares the machine's cores with the server: the figures are loopback
figures, for comparing the stacks with each other, not a capacity plan.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.data.ingest import ingest
from reloop_cli.experiments.live_server import Client, ServerProcess, free_port, wait_for
from reloop_cli.experiments.synth import DEVICES
from reloop_cli.operations.deploy import publish_live
from reloop_cli.runtime.resources import bundled, sample_files
from reloop_cli.serving.clickjoin import join_clicks, served_spec
from reloop_cli.serving.impressions import impression_types
from reloop_cli.serving.logs import CLICKS, IMPRESSIONS, LogWriter
from reloop_cli.serving.requests import parse_score, read_json
from reloop_cli.serving.service import Service, ServiceConfig
from reloop_cli.spec.pipeline import load_spec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import train_version

SIZES = (20, 100, 500)
PYFUNC = '''
"""The reloop release as an MLflow pyfunc (a model from code: MLflow loads no pickle)."""
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel


class ReloopRelease(PythonModel):
    def load_context(self, context):
        from reloop_cli.serving.live import load_live

        serving = Path(context.artifacts["serving"])  # a copy of serving/ with one release
        (release,) = (serving / "releases").iterdir()
        self.live = load_live(serving, release.name)

    def predict(self, context, model_input, params=None):
        encoded = self.live.encoder.encode(model_input.to_dict("records"))
        return self.live.predict(encoded.categorical, encoded.dense)


mlflow.models.set_model(ReloopRelease())
'''


def build_workspace(root: Path, quick: bool) -> tuple[Workspace, object]:
    """The bundled sample's first days, v1 and v2 trained (v1 published, v2 for the swap)."""
    ws = Workspace(root / "ws")
    spec = load_spec(bundled("pipelines/sample.toml")).override(
        "train", epochs=1 if quick else 2, warm_start=False, last_source="parent"
    )
    spec = spec.override("serving", flush_rows=20_000, flush_seconds=1.0)
    ingest(ws, spec, sample_files()[:3])
    with Registry(ws) as registry:
        for day in ws.days()[:2]:
            train_version(ws, registry, spec, day)
        registry.set_live(MAIN_CHAIN, 1)
        publish_live(ws, registry)
    return ws, spec


def request_bodies(ws: Workspace, size: int, count: int, seed: int = 0) -> list[dict]:
    """`count` requests of `size` candidates drawn from the sample's logged values."""
    rows = ws.scan_logs(ws.days()[:1]).select("user_id", "item_id", "category", "hour", "device")
    rows = rows.collect()
    users, items = rows["user_id"].unique().sort(), rows.select("item_id", "category").unique()
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        picked = items[rng.choice(items.height, size, replace=items.height < size)]
        bodies.append(
            {
                "context": {
                    "user_id": users[int(rng.integers(users.len()))],
                    "hour": int(rng.integers(24)),
                    "device": str(DEVICES[int(rng.integers(len(DEVICES)))]),
                },
                "candidates": picked.to_dicts(),
                "slots": 5,
            }
        )
    return bodies


def as_records(body: dict) -> dict:
    """The same request for MLflow: each row carries the context's fields."""
    return {"dataframe_records": [{**body["context"], **c} for c in body["candidates"]]}


def median_rounds(runs: dict[str, list[dict]]) -> dict:
    """Per server, the median over rounds of `load`'s p50, p99 and throughput, the failures
    summed and each round's p99 kept (the servers measured in turn, round after round)."""
    figures = {}
    for name, measured in runs.items():
        figures[name] = {
            key: float(np.median([m[key] for m in measured]))
            for key in ("p50_ms", "p99_ms", "per_s")
        }
        figures[name]["failures"] = int(sum(m["failures"] for m in measured))
        figures[name]["rounds_p99_ms"] = [m["p99_ms"] for m in measured]
    return figures


def load(
    port: int,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
    answers: list | None = None,
) -> dict:
    """POST each body once (at most `seconds`), from `concurrency` threads; latencies, failures."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    queue = iter(range(len(bodies)))
    deadline = time.monotonic() + seconds

    def worker() -> None:
        client = Client(port, timeout=30)
        try:
            while time.monotonic() < deadline:
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    status, answer = client.request("POST", path, bodies[index])
                except OSError:
                    status, answer = 0, {}
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if status != 200:
                        failures[0] += 1
                    if answers is not None:  # (start, end, seconds, status, version)
                        end = time.monotonic()
                        answers.append((end - elapsed, end, elapsed, status, answer.get("version")))
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summary(latencies, time.perf_counter() - started, failures[0])


def summary(latencies: list[float], wall: float, failures: int = 0) -> dict:
    done = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failures": failures,
        "per_s": len(latencies) / wall if wall else 0.0,
        "p50_ms": float(np.percentile(done, 50)) if done.size else float("nan"),
        "p99_ms": float(np.percentile(done, 99)) if done.size else float("nan"),
    }


def in_process(ws: Workspace, spec, bodies: list[dict], args) -> dict:
    """`Service.score` in a loop: what a request costs without HTTP (one thread, the limit);
    the JSON parse of the body is counted, as the server must do it."""
    import torch

    torch.set_num_threads(1)
    service = Service(ServiceConfig(ws.serving, Path(tempfile.mkdtemp()) / "logs", spec))
    service.start()
    fields, limits = spec.data.feature_fields, spec.serving
    encoded = [json.dumps(body).encode() for body in bodies]
    seconds = 5 if args.quick else 30
    latencies: list[float] = []
    try:
        for body in encoded[:20]:  # warm up, as the servers are
            service.score(parse_score(read_json(body, limits), fields, limits, None))
        deadline, started = time.monotonic() + seconds, time.perf_counter()
        for body in encoded:
            if time.monotonic() > deadline:
                break
            began = time.perf_counter()
            service.score(parse_score(read_json(body, limits), fields, limits, None))
            latencies.append(time.perf_counter() - began)
        wall = time.perf_counter() - started
    finally:
        service.stop()
    figures = summary(latencies, wall)
    return {**figures, "loaded_p99_ms": figures["p99_ms"]}


class MlflowServer:
    """`mlflow models serve` of the live release, as a pyfunc model from code."""

    def __init__(self, ws: Workspace, root: Path) -> None:
        self.ws, self.root, self.port = ws, root, free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> MlflowServer:
        import mlflow.pyfunc

        from reloop_cli.serving.release import pointer

        code = self.root / "reloop_pyfunc.py"
        code.write_text(PYFUNC, encoding="utf-8")
        model = self.root / "mlflow-model"
        name = pointer(self.ws.serving)["release"]
        serving = self.root / "peer-serving"
        shutil.copytree(self.ws.releases / name, serving / "releases" / name)
        mlflow.pyfunc.save_model(
            str(model), python_model=str(code), artifacts={"serving": str(serving)}
        )
        self.log = open(self.root / "mlflow-serve.log", "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model)),
                *("--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port), "-w", "1"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it starts uvicorn as a child: stop the whole group
            env={
                **os.environ,
                # it starts `uvicorn` by name: the interpreter's own scripts come first
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            },
        )

        def ready() -> bool:
            if self.process.poll() is not None:
                self.log.flush()
                text = Path(self.log.name).read_text(encoding="utf-8")
                tail = "\n".join(line for line in text.splitlines() if "Error" in line)
                raise RuntimeError(f"mlflow models serve exited:\n{tail}")
            try:
                client = Client(self.port, timeout=2)
                status = client.request("GET", "/ping")[0]
                client.close()
                return status == 200
            except (OSError, ValueError):
                return False

        try:
            wait_for("mlflow models serve", ready, 180, every=0.5)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:  # its own session: the group id is its pid
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
                try:
                    self.process.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.log.close()


def measure(port: int, path: str, bodies: list[bytes], args) -> dict:
    """Latency from one client (no queueing), then throughput from `--concurrency` clients."""
    seconds = 5 if args.quick else 30
    load(port, path, bodies[:20], 1, seconds)  # warm up: first calls trace and allocate
    single = load(port, path, bodies[: len(bodies) // 2], 1, seconds)
    loaded = load(port, path, bodies, args.concurrency, seconds)
    return {
        "p50_ms": single["p50_ms"],
        "p99_ms": single["p99_ms"],
        "per_s": loaded["per_s"],
        "loaded_p99_ms": loaded["p99_ms"],
        "requests": single["requests"] + loaded["requests"],
        "failures": single["failures"] + loaded["failures"],
    }


def throughput(ws, spec, root: Path, args) -> dict:
    counts = {20: 100, 100: 60, 500: 20} if args.quick else {20: 4000, 100: 2000, 500: 500}
    figures: dict = {}
    bodies = {size: request_bodies(ws, size, counts[size], seed=size) for size in SIZES}
    for size in SIZES:
        figures.setdefault(size, {})["in_process"] = in_process(ws, spec, bodies[size], args)
    encoded = {size: [json.dumps(b).encode() for b in bodies[size]] for size in SIZES}
    env = {"RELOOP_SERVING_FLUSH_ROWS": "20000"}
    with ServerProcess(ws.root, ("--threads", "1"), environment=env) as server:
        for size in SIZES:
            figures[size]["reloop_serve"] = measure(server.port, "/score", encoded[size], args)
    if args.peer:
        with MlflowServer(ws, root) as peer:
            for size in SIZES:
                records = [json.dumps(as_records(b)).encode() for b in bodies[size]]
                figures[size]["mlflow_serve"] = measure(peer.port, "/invocations", records, args)
    return figures


def runtimes(ws: Workspace, root: Path, args) -> dict:
    """The network's forward alone, per request of 20/100/500 rows, one thread: eager PyTorch,
    the TorchScript trace `reloop serve` runs, and ONNX Runtime on `reloop export`'s file; the
    median of many calls after a warm-up. Why the server traces (docs/guides/serving.md)."""
    import torch

    from reloop_cli.operations.export import export_version
    from reloop_cli.serving.live import load_live
    from reloop_cli.serving.release import pointer

    torch.set_num_threads(1)
    live = load_live(ws.serving, pointer(ws.serving)["release"])
    onnx_path = root / "model.onnx"
    export_version(ws, live.version, "onnx", onnx_path)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options)
    names = [i.name for i in session.get_inputs()]
    model = live.release.model.eval()  # the plain modules the trace was made from
    calls = 20 if args.quick else 2_000
    figures = {}
    for size in SIZES:
        body = request_bodies(ws, size, 1, seed=size)[0]
        encoded = live.encoder.encode([{**body["context"], **c} for c in body["candidates"]])
        inputs = (encoded.categorical, encoded.dense)
        feeds = dict(zip(names, (t.numpy() for t in inputs), strict=False))

        candidates = {
            "eager": lambda inputs=inputs: _eager(model, inputs),
            "torchscript_trace": lambda inputs=inputs: live.predict(*inputs),
            "onnxruntime": lambda feeds=feeds: session.run(None, feeds),
        }
        figures[size] = {}
        for name, call in candidates.items():
            for _ in range(20):
                call()
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            figures[size][name] = float(np.median(times) * 1e6)
    return figures


def _eager(model, inputs) -> None:
    import torch

    with torch.no_grad():
        torch.sigmoid(model(*inputs))


def hot_swap(ws, spec, args) -> dict:
    """Load while v2 is published; what failed, which versions answered, the spike."""
    bodies = [
        json.dumps(body).encode()
        for body in request_bodies(ws, 100, 400 if args.quick else 4000, seed=7)
    ]
    answers: list = []
    env = {"RELOOP_SERVING_RELOAD_SECONDS": "0.2"}
    with ServerProcess(ws.root, ("--threads", "1"), environment=env) as server:
        load(server.port, "/score", bodies[:10], 1, 10)
        swapped_at: list[float] = []

        def publish_later() -> None:
            time.sleep(0.5 if args.quick else 4.0)
            with Registry(ws) as registry:
                registry.set_live(MAIN_CHAIN, 2)
                publish_live(ws, registry)
            swapped_at.append(time.monotonic())

        publisher = threading.Thread(target=publish_later)
        publisher.start()
        figures = load(
            server.port, "/score", bodies, args.concurrency, 15 if args.quick else 30, answers
        )
        publisher.join()
    versions = [a[4] for a in answers]
    first_new = min((a[1] for a in answers if a[4] == 2), default=None)  # its answer's end
    before = [a[2] for a in answers if first_new is None or a[1] < first_new - 1.0]
    around = [a[2] for a in answers if first_new is not None and abs(a[1] - first_new) <= 1.0]
    # Once the server has answered with v2, a request that starts afterwards must get v2.
    stale = sum(1 for a in answers if first_new is not None and a[0] > first_new and a[4] == 1)
    with Registry(ws) as registry:  # back to v1 for a rerun
        registry.set_live(MAIN_CHAIN, 1)
        publish_live(ws, registry)
    return {
        **figures,
        "versions": sorted({v for v in versions if v is not None}),
        "stale_after_swap": stale,
        "p99_before_ms": float(np.percentile(np.array(before) * 1000, 99)) if before else None,
        "max_around_swap_ms": max(around) * 1000 if around else None,
        "swap_seconds_after_publish": (first_new - swapped_at[0]) if first_new else None,
    }


def click_join(spec, root: Path, args) -> dict:
    """A day of server logs -> labelled rows -> ingested, rows/s; beside ingest alone."""
    rows = 20_000 if args.quick else 500_000
    rng = np.random.default_rng(0)
    logs = root / "server-logs"
    start = 1_704_067_200
    ts = start + np.sort(rng.integers(0, 86_400, rows)).astype(np.float64)
    frame = pl.DataFrame(
        {
            "user_id": pl.Series(rng.integers(0, 5_000, rows)).cast(pl.String),
            "item_id": pl.Series(rng.integers(0, 20_000, rows)).cast(pl.String),
            "category": pl.Series(rng.integers(0, 40, rows)).cast(pl.String),
            "hour": pl.Series(((ts - start) // 3_600).astype(np.int64)).cast(pl.String),
            "device": pl.Series(DEVICES[rng.integers(0, len(DEVICES), rows)]),
            "position": pl.Series(rng.integers(1, 6, rows)).cast(pl.String),
            "impression_id": [f"b{i:012x}" for i in range(rows)],
            "request_id": [f"r{i // 5}" for i in range(rows)],
            "ts": ts,
            "served_version": np.ones(rows, np.int64),
            "served_pctr": rng.random(rows) * 0.2,
            "slot": rng.integers(1, 6, rows),
            "propensity": np.full(rows, 0.95),
        }
    )
    writer = LogWriter(logs, IMPRESSIONS, "bench", "UTC", 50_000, 60, impression_types(spec))
    for chunk in frame.iter_slices(50_000):
        writer.append(chunk.to_dicts())
    writer.flush()
    clicked = frame.sample(fraction=0.1, seed=1)
    clicks = LogWriter(logs, CLICKS, "bench", "UTC", 50_000, 60)
    clicks.append(
        [
            {"impression_id": i, "ts": t + 30.0}
            for i, t in clicked.select("impression_id", "ts").rows()
        ]
    )
    clicks.flush()

    ws = Workspace(root / "join-ws")
    started = time.perf_counter()
    joined = join_clicks(ws, spec, logs, as_of=start + 3 * 86_400)
    joined_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ingest(ws, served_spec(spec), [Path(f) for f in joined.files])
    ingest_seconds = time.perf_counter() - started

    alone = Workspace(root / "alone-ws")
    labelled = root / "labelled.parquet"
    shutil.copy(joined.files[0], labelled)
    started = time.perf_counter()
    ingest(alone, served_spec(spec), [labelled])
    alone_seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "clicked": joined.clicked,
        "join_rows_per_s": rows / joined_seconds,
        "join_and_ingest_rows_per_s": rows / (joined_seconds + ingest_seconds),
        "ingest_alone_rows_per_s": rows / alone_seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip MLflow")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="reloop-serve-bench-"))
    try:
        ws, spec = build_workspace(root, args.quick)
        figures = {
            "forward_us": runtimes(ws, root, args),
            "throughput": throughput(ws, spec, root, args),
            "hot_swap": hot_swap(ws, spec, args),
            "click_join": click_join(spec, root, args),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    render(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return figures


def render(figures: dict) -> None:
    print("the network's forward alone, median microseconds per request (one thread):")
    for size, runs in figures["forward_us"].items():
        print(f"  {size:>4} rows: " + ", ".join(f"{k} {v:,.0f}" for k, v in runs.items()))
    print(
        "POST /score on loopback, one server process, one torch thread: p50 / p99 ms from one "
        "client; requests/s from several"
    )
    for size, stacks in figures["throughput"].items():
        line = [f"{size:>4} candidates:"]
        for name, result in stacks.items():
            line.append(
                f"{name} {result['p50_ms']:.2f}/{result['p99_ms']:.2f} ms {result['per_s']:,.0f}/s"
                + (f" ({result['failures']} failed)" if result.get("failures") else "")
            )
        print("  " + " | ".join(line))
        base, served = stacks["in_process"], stacks["reloop_serve"]
        ratio = f"    in-process/serve: throughput {base['per_s'] / served['per_s']:.2f}x"
        if "mlflow_serve" in stacks:
            peer = stacks["mlflow_serve"]
            ratio += (
                f"; serve/mlflow: throughput {served['per_s'] / peer['per_s']:.2f}x; "
                f"mlflow/serve: p99 {peer['p99_ms'] / served['p99_ms']:.2f}x"
            )
        print(ratio)
    swap = figures["hot_swap"]
    worst, before = swap["max_around_swap_ms"], swap["p99_before_ms"]
    print(
        f"hot swap under load: {swap['requests']} requests, {swap['failures']} failed, versions "
        f"{swap['versions']}, v1 answers started after the first v2 one: "
        f"{swap['stale_after_swap']}; p99 before "
        + (f"{before:.2f} ms" if before is not None else "- (no answer a second before it)")
        + ", worst within 1 s of the swap "
        + (f"{worst:.2f} ms" if worst is not None else "(no swap seen)")
    )
    join = figures["click_join"]
    print(
        f"click join of {join['rows']:,} impressions: join {join['join_rows_per_s']:,.0f} rows/s, "
        f"join + ingest {join['join_and_ingest_rows_per_s']:,.0f} rows/s, ingest alone "
        f"{join['ingest_alone_rows_per_s']:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
