"""`reloop serve`'s HTTP face (Starlette, run by uvicorn): the routes over one `Service`.

    POST /score          score a request's candidates; with `slots`, choose the shown slate
    POST /feedback       clicks, by impression id
    GET  /health/live    200 while the process answers (a liveness probe)
    GET  /health/ready   200 when it should get traffic: a version to serve (or a random cold
                         start) and logs being written; else 503 with the reasons
    GET  /health         the same as /health/ready
    GET  /metrics        Prometheus text (serving/metrics.py), summed over workers

Every answer is JSON, errors too: `{"error": "<field>: <what is wrong>"}`. A request that writes
(/score logs impressions, /feedback clicks: tomorrow's training data) must say it is JSON
(`Content-Type: application/json`, else 415) and must not come from a browser page of another
origin (an `Origin` header not in `serving.allowed_origins`: 403), so no web page open on the
host can post clicks; with RELOOP_SERVE_TOKEN set it must also carry `Authorization: Bearer
<token>` (401). Every body is read up to `serving.max_body_bytes` and within
`serving.body_timeout_seconds`; a bad request gets a 4xx with a one-line reason naming the field,
and the server goes on serving. A bug is a 500 with a JSON body, logged and counted like any
other status. Scoring runs in the thread pool, so a slow forward pass never holds the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from threadpoolctl import threadpool_limits

from reloop_cli.serving.logs import LogFull
from reloop_cli.serving.metrics import CONTENT_TYPE
from reloop_cli.serving.requests import RequestError, parse_feedback, parse_score, read_json
from reloop_cli.serving.service import Service, ServiceConfig
from reloop_cli.spec.pipeline import spec_from_dict

log = logging.getLogger("reloop")
TOKEN_ENVIRONMENT = "RELOOP_SERVE_TOKEN"
JSON_TYPES = ("application/json",)  # and application/<anything>+json


async def _body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, refused at `limit` bytes without reading the rest, and when it has not
    all arrived within `seconds` (a client that stalls mid-body holds no worker)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413, f"body: {int(declared):,} bytes, over serving.max_body_bytes {limit:,}"
        )
    chunks, size = [], 0
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(request.receive(), timeout=max(left, 0.0))
        except TimeoutError:
            raise RequestError(
                408, f"body: not received within serving.body_timeout_seconds ({seconds:g} s)"
            ) from None
        if message["type"] == "http.disconnect":
            raise RequestError(400, "body: the client went away before sending it")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body: over serving.max_body_bytes {limit:,}")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def check_write_allowed(request: Request, origins: tuple[str, ...], token: str) -> None:
    """A write is JSON, from no foreign browser page, and with the token when one is set."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSON_TYPES and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        shown = f"'{media}'" if media else "missing"
        raise RequestError(
            415, f"content-type: {shown}; this route takes JSON (Content-Type: application/json)"
        )
    origin = request.headers.get("origin")
    if origin is not None and origin not in origins:
        raise RequestError(
            403,
            f"origin: writes from '{origin}' are refused (a browser page of another site); "
            "list trusted origins in serving.allowed_origins",
        )
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise RequestError(
                401, f"authorization: a Bearer token is required ({TOKEN_ENVIRONMENT})"
            )


def create_app(service: Service) -> Starlette:
    metrics = service.metrics
    settings = service.config.spec.serving
    fields = service.config.spec.data.feature_fields
    client_time = service.config.client_time
    token = service.config.token

    async def answer(route: str, request: Request, handle: Callable[[dict], dict]) -> Response:
        started = time.perf_counter()
        try:
            check_write_allowed(request, settings.allowed_origins, token)
            body = await _body(request, settings.max_body_bytes, settings.body_timeout_seconds)
            payload = read_json(body, settings)
            response = JSONResponse(await run_in_threadpool(handle, payload))
        except RequestError as error:
            # a body left unread (too slow, too large) ends the connection with the answer
            close = {"connection": "close"} if error.status in (408, 413) else None
            response = JSONResponse(
                {"error": error.message}, status_code=error.status, headers=close
            )
        except LogFull as error:
            response = JSONResponse({"error": f"busy: {error}"}, status_code=503)
        except Exception as error:  # a bug: answered, logged and counted, never plain text
            log.exception("%s: internal error", route)
            response = JSONResponse(
                {"error": f"internal error: {type(error).__name__} (see the server's log)"},
                status_code=500,
            )
        metrics.observe(route, response.status_code, time.perf_counter() - started)
        return response

    async def score(request: Request) -> Response:
        return await answer(
            "score", request, lambda p: service.score(parse_score(p, fields, settings, client_time))
        )

    async def feedback(request: Request) -> Response:
        return await answer(
            "feedback",
            request,
            lambda p: {"accepted": service.feedback(parse_feedback(p, client_time))},
        )

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True, "boot": service.boot})

    async def ready(request: Request) -> Response:
        body = service.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def scrape(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, error: HTTPException) -> Response:
        """404, 405 and their kin as JSON, counted under the route "other"."""
        metrics.observe("other", error.status_code, 0.0)
        where = f"{request.method} {request.url.path}"
        return JSONResponse(
            {"error": f"{where}: {error.detail}"},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    async def server_error(request: Request, error: Exception) -> Response:
        metrics.observe("other", 500, 0.0)
        log.exception("internal error outside a route")
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        service.start()
        try:
            yield
        finally:
            # SIGTERM and Ctrl-C come here through uvicorn once requests in flight are done
            # (or cut at serving.shutdown_seconds): the buffer is written, failed writes retried
            service.stop()

    routes = [
        Route("/score", score, methods=["POST"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/health", ready, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, 500: server_error},
    )


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
        os.environ.get(TOKEN_ENVIRONMENT, ""),
    )
    return create_app(Service(config))
