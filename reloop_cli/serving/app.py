"""`reloop serve`'s HTTP face (Starlette, run by uvicorn): four routes over one `Service`.

    POST /score      score a request's candidates; with `slots`, choose the shown slate
    POST /feedback   clicks, by impression id
    GET  /health     200 with the live version once one is published (or while serving at
                     random, `serving.cold_start = "random"`), else 503
    GET  /metrics    Prometheus text: requests by route and status, latency, swaps, rows logged

Every body is read up to `serving.max_body_bytes` and no further; a bad request gets a 4xx with a
one-line reason naming the field, and the server goes on serving. Scoring runs in the thread
pool, so a slow forward pass never holds the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from threadpoolctl import threadpool_limits

from reloop_cli.serving.logs import LogFull
from reloop_cli.serving.requests import RequestError, parse_feedback, parse_score, read_json
from reloop_cli.serving.service import Service, ServiceConfig
from reloop_cli.spec.pipeline import spec_from_dict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Telemetry:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "reloop_requests",
            "Requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "reloop_request_seconds",
            "Seconds to answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        live = Gauge("reloop_live_version", "The version serving.", registry=self.registry)
        live.set_function(lambda: service.live.version if service.live else -1)
        swaps = Gauge("reloop_swaps", "Releases swapped in since start.", registry=self.registry)
        swaps.set_function(lambda: service.counters.swaps)
        logged = Gauge(
            "reloop_logged_rows", "Rows written to the logs.", ["kind"], registry=self.registry
        )
        logged.labels("impressions").set_function(lambda: service.impressions.written)
        logged.labels("clicks").set_function(lambda: service.clicks.written)
        adapted = Gauge(
            "reloop_adapter_rows",
            "The live release's adapter: impressions written to it, held for their labels, "
            "dropped past serving.adapter_pending_rows.",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("written", "held", "dropped"):
            adapted.labels(kind).set_function(lambda kind=kind: _adapter_count(service, kind))
        memory = Gauge(
            "reloop_adapter_bytes", "The live adapter's memory in bytes.", registry=self.registry
        )
        memory.set_function(
            lambda: (
                service.live.adapter.memory_bytes() if service.live and service.live.adapter else 0
            )
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


def _adapter_count(service: Service, kind: str) -> int:
    adapter = service.live.adapter if service.live else None
    if adapter is None:
        return 0
    return len(adapter.held) if kind == "held" else getattr(adapter, kind)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused at `limit` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413, f"body: {int(declared):,} bytes, over serving.max_body_bytes {limit:,}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body: over serving.max_body_bytes {limit:,}")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: Service) -> Starlette:
    telemetry = Telemetry(service)
    limits = service.config.spec.serving
    fields = service.config.spec.data.feature_fields
    trust = service.config.trust_client_time

    async def answer(route: str, request: Request, handle) -> Response:
        started = time.perf_counter()
        try:
            payload = read_json(await _body(request, limits.max_body_bytes), limits)
            response = JSONResponse(await run_in_threadpool(handle, payload))
        except RequestError as error:
            response = JSONResponse({"error": error.message}, status_code=error.status)
        except LogFull as error:
            response = JSONResponse({"error": f"busy: {error}"}, status_code=503)
        telemetry.observe(route, response.status_code, time.perf_counter() - started)
        return response

    async def score(request: Request) -> Response:
        return await answer(
            "score", request, lambda p: service.score(parse_score(p, fields, limits, trust))
        )

    async def feedback(request: Request) -> Response:
        return await answer(
            "feedback", request, lambda p: {"accepted": service.feedback(parse_feedback(p, trust))}
        )

    async def health(request: Request) -> Response:
        live = service.live
        cold = live is None and limits.cold_start == "random"
        body = {
            "ready": live is not None or cold,
            "version": live.version if live else None,
            "release": live.release.name if live else None,
            "cold_start": cold,  # serving at random until a version is published
            "adapter": limits.adapter or None,
            "boot": service.boot,
        }
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        service.start()
        try:
            yield
        finally:
            service.stop()  # SIGTERM and Ctrl-C come here through uvicorn: the buffer is written

    routes = [
        Route("/score", score, methods=["POST"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


ENVIRONMENT = "RELOOP_SERVE_CONFIG"  # how `reloop serve --workers N` hands each worker its setup


def limit_threads(threads: int) -> None:
    """`--threads` for torch and for the BLAS numpy calls (the error memory's projections):
    OpenBLAS otherwise starts a thread per core that spins between calls, and on a small
    machine those threads take the cores the event loop and the clients need (`python -m
    benchmarks.adapt_memory`: /score p99 with the error memory 1.68-2.04x the server without
    it while they ran, 1.20-1.26x once capped; docs/guides/adapting.md)."""
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def from_environment() -> Starlette:
    """The app of one uvicorn worker process (`--workers N`): its setup comes as JSON in the
    environment, and each worker has a boot id, impression ids and log files of its own."""
    setup = json.loads(os.environ[ENVIRONMENT])
    limit_threads(setup.get("threads", 1))
    config = ServiceConfig(
        Path(setup["serving_root"]),
        Path(setup["log_dir"]),
        spec_from_dict(setup["spec"], "reloop serve"),
        setup["trust_client_time"],
        setup["seed"],
    )
    return create_app(Service(config))
