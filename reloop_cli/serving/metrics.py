"""The server's Prometheus metrics: what `GET /metrics` reports, summed over every worker.

One process: the metrics live in a registry of their own (one per app, so tests can run several
apps side by side). With `reloop serve --workers N` uvicorn runs N processes; each would count
only its own requests, so `reloop serve` gives them one folder in PROMETHEUS_MULTIPROC_DIR
(made fresh at start, removed at exit) and prometheus-client's multiprocess mode sums the
counters and histograms of every worker whichever one a scrape reaches. Every value is therefore
set where it happens (no callback gauges, which that mode cannot sum), except the adapter's,
which runs only with one worker.

Counters end in `_total`, as Prometheus names them: requests by route and status (every 4xx and
5xx included), releases swapped in, rows written, writes failed, rows dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_mode() -> bool:
    """Whether this process is one of several workers summed through PROMETHEUS_MULTIPROC_DIR."""
    return bool(os.environ.get(MULTIPROCESS))


class ServerMetrics:
    """Every metric of one server process; also the log writers' observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.summed = multiprocess_mode()
        registry = self.registry
        self.requests = Counter(
            "reloop_requests",
            "Requests by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "reloop_request_seconds",
            "Seconds to answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.live_version = Gauge(
            "reloop_live_version",
            "The version serving (-1: none yet); the lowest of the workers.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.live_version.set(-1)
        self.arm_requests = Counter(
            "reloop_experiment_requests",
            "Requests served in a running experiment, by arm (live, candidate).",
            ["arm"],
            registry=registry,
        )
        self.swaps = Counter("reloop_swaps", "Releases swapped in since start.", registry=registry)
        self.logged = Counter(
            "reloop_logged_rows", "Rows written to the logs.", ["kind"], registry=registry
        )
        self.write_failures = Counter(
            "reloop_log_write_failures",
            "Log writes that failed (their rows stay buffered).",
            ["kind"],
            registry=registry,
        )
        self.dropped = Counter(
            "reloop_log_rows_dropped",
            "Rows given up: still unwritten at the end of the shutdown grace, or no file could "
            "hold them.",
            ["kind"],
            registry=registry,
        )
        self.buffered = Gauge(
            "reloop_log_rows_buffered",
            "Rows waiting to be written.",
            ["kind"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        for kind in ("impressions", "clicks"):  # present at zero before the first event
            self.logged.labels(kind)
            self.write_failures.labels(kind)
            self.dropped.labels(kind)
            self.buffered.labels(kind).set(0)

    # --- events -----------------------------------------------------------------------------
    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def swapped(self, version: int) -> None:
        self.swaps.inc()
        self.live_version.set(version)

    def arm_request(self, arm: str) -> None:
        self.arm_requests.labels(arm).inc()

    def rows_written(self, kind: str, rows: int) -> None:
        self.logged.labels(kind).inc(rows)

    def write_failed(self, kind: str) -> None:
        self.write_failures.labels(kind).inc()

    def rows_dropped(self, kind: str, rows: int) -> None:
        self.dropped.labels(kind).inc(rows)

    def rows_buffered(self, kind: str, rows: int) -> None:
        self.buffered.labels(kind).set(rows)

    def watch_adapter(
        self,
        count: Callable[[str], int],
        size: Callable[[], int],
        occupancy: Callable[[], dict],
    ) -> None:
        """The live adapter's rows, bytes and (ReLoop2) memory occupancy, read at each scrape
        (an adapter runs with one worker only)."""
        if self.summed:
            return
        filled = Gauge(
            "reloop_memory_occupancy",
            "ReLoop2's memory: buckets used per array (mean), rows per queried bucket (p50, "
            "p90), the share of reads that found an empty bucket (adapt/error_memory.py).",
            ["figure"],
            registry=self.registry,
        )
        for figure in (
            "buckets_used_mean",
            "rows_per_read_p50",
            "rows_per_read_p90",
            "empty_read_share",
        ):
            filled.labels(figure).set_function(
                lambda figure=figure: float(occupancy().get(figure) or 0.0)
            )
        rows = Gauge(
            "reloop_adapter_rows",
            "The live release's adapter: impressions written to it, held for their labels, "
            "dropped past serving.adapter_pending_rows.",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("written", "held", "dropped"):
            rows.labels(kind).set_function(lambda kind=kind: count(kind))
        memory = Gauge(
            "reloop_adapter_bytes", "The live adapter's memory in bytes.", registry=self.registry
        )
        memory.set_function(size)

    # --- the scrape -------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text of this process, or of every worker in multiprocess mode."""
        if not self.summed:
            return generate_latest(self.registry)
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)
        return generate_latest(summed)


def mark_worker_gone(pid: int) -> None:
    """Drop a stopped worker's live gauges from the sums (its counters stay counted)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)
