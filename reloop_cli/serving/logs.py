"""What the server logs: every shown impression (with its served pCTR, position and propensity,
tomorrow's ỹ_last) and every click, as Parquet that `reloop run --from-server` reads.

    <log dir>/impressions/day=YYYY-MM-DD/<boot>-<seq>.parquet
    <log dir>/clicks/day=YYYY-MM-DD/<boot>-<seq>.parquet
    <log dir>/boots/<boot>.json     when a server started, with which seed and settings

Rows wait in memory until `serving.flush_rows` of them or `serving.flush_seconds` have passed;
then one complete file is written under a temporary name and renamed, so a reader never sees a
torn file and a killed server loses at most its unflushed buffer. Each server process has its
own boot id (random), so files and impression ids of a restart, or of several servers writing
one folder, never collide; nothing is ever appended to or overwritten.

A write that fails (a full disk, a folder made read-only) loses nothing: the rows go back to the
front of the buffer, in order, and the write is tried again after a back-off (0.5 s, doubling to
30 s). Meanwhile requests are still answered and buffered, up to `BUFFER_LIMIT` x
`serving.flush_rows` rows, past which they are refused (503) rather than answered and dropped.
Rows are dropped only at shutdown, when the writes still fail after `serving.shutdown_seconds`,
and then counted (`reloop_log_rows_dropped_total`) and logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import polars as pl

IMPRESSIONS, CLICKS, BOOTS = "impressions", "clicks", "boots"
BUFFER_LIMIT = 4  # times flush_rows: past it, requests are refused (503) rather than memory grow
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 0.5, 30.0  # the back-off between failed writes

log = logging.getLogger("reloop")


class LogFull(RuntimeError):
    """The buffer is past its bound (the disk cannot keep up): refuse, do not grow."""


class LogObserver(Protocol):
    """What a writer reports as it goes (the server's metrics)."""

    def rows_written(self, kind: str, rows: int) -> None: ...
    def write_failed(self, kind: str) -> None: ...
    def rows_dropped(self, kind: str, rows: int) -> None: ...
    def rows_buffered(self, kind: str, rows: int) -> None: ...


def new_boot_id() -> str:
    """12 random hex digits: unique per server start (and per worker process)."""
    return secrets.token_hex(6)


class ImpressionIds:
    """Impression ids unique across restarts and processes: the boot id, then a counter."""

    def __init__(self, boot: str) -> None:
        self.boot, self.next, self._lock = boot, 0, threading.Lock()

    def take(self, count: int) -> list[str]:
        with self._lock:
            start, self.next = self.next, self.next + count
        return [f"{self.boot}{n:010x}" for n in range(start, start + count)]


@dataclass
class WriterHealth:
    """Whether a writer keeps up: failing since its last write failed and until one succeeds."""

    failing: bool = False
    failures: int = 0  # writes that failed since start
    dropped: int = 0  # rows given up (only at shutdown, or rows no file can hold)
    last_error: str = ""


class LogWriter:
    """A buffered, thread-safe writer of one kind of rows (impressions or clicks)."""

    def __init__(
        self,
        folder: Path,
        kind: str,
        boot: str,
        zone: str,
        flush_rows: int,
        flush_seconds: float,
        types: dict[str, pl.DataType] | None = None,
        observer: LogObserver | None = None,
    ) -> None:
        self.folder, self.kind, self.boot = folder / kind, kind, boot
        # Each column's type, fixed: a file whose column is all empty (a cold start's served
        # pCTR, a field no request sent) must read as the same type as every other file.
        self.types = {"impression_id": pl.String, "ts": pl.Float64, **(types or {})}
        self.zone = ZoneInfo(zone)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.observer = observer
        self.rows: list[dict] = []
        self.sequence = 0
        self.written = 0
        self.health = WriterHealth()
        self._lock = threading.Lock()  # the buffer
        self._writing = threading.Lock()  # one flush at a time, in order
        self._last = time.monotonic()
        self._retry_at = 0.0
        self._backoff = FIRST_RETRY_SECONDS

    @property
    def limit(self) -> int:
        return BUFFER_LIMIT * self.flush_rows

    def append(self, rows: list[dict]) -> None:
        """Buffer rows; flush when the buffer is full. Raises `LogFull` past its bound; a
        failing write never raises here (the rows stay buffered and are retried)."""
        with self._lock:
            if len(self.rows) + len(rows) > self.limit:
                raise LogFull(f"{self.kind}: {len(self.rows):,} rows wait to be written")
            self.rows.extend(rows)
            buffered = len(self.rows)
            due = buffered >= self.flush_rows and time.monotonic() >= self._retry_at
        self._report_buffered(buffered)
        if due:
            self.flush()

    def due(self) -> bool:
        now = time.monotonic()
        return bool(self.rows) and now - self._last >= self.flush_seconds and now >= self._retry_at

    def flush(self) -> int:
        """Write what is buffered, one complete file per day the rows fall on; rows of a
        write that failed go back to the front of the buffer. Returns the rows written."""
        with self._writing:
            with self._lock:
                rows, self.rows = self.rows, []
                self._last = time.monotonic()
            if not rows:
                return 0
            left = self._write_days(rows)
            written = len(rows) - len(left)
            with self._lock:
                self.rows[:0] = left  # unwritten rows first: the order they came in
                buffered = len(self.rows)
            self.written += written
            if written and self.observer:
                self.observer.rows_written(self.kind, written)
            self._report_buffered(buffered)
            return written

    def stop(self, deadline: float) -> int:
        """Flush until nothing is left or `deadline` (time.monotonic()) passes; what is still
        unwritten then is dropped, counted and logged. Returns the rows dropped."""
        while True:
            self.flush()
            with self._lock:
                left = len(self.rows)
            if not left:
                return 0
            wait = min(self._backoff, deadline - time.monotonic())
            if wait <= 0:
                break
            time.sleep(wait)
        with self._lock:
            self.rows = []
        self._drop(left, f"still unwritten at shutdown: {self.health.last_error}")
        return left

    # --- writing ----------------------------------------------------------------------------
    def _write_days(self, rows: list[dict]) -> list[dict]:
        """Write `rows` as one file per day; the rows not written (a failed write) come back."""
        rows, frame, days = self._typed(rows)
        done: set[str] = set()
        for day in dict.fromkeys(days):  # each day once, in the order the rows came
            try:
                self._write(day, frame.filter(pl.Series(days) == day))
            except Exception as error:
                self._failed(error)
                return [row for row, row_day in zip(rows, days, strict=True) if row_day not in done]
            done.add(day)
        self._recovered()
        return []

    def _typed(self, rows: list[dict]) -> tuple[list[dict], pl.DataFrame, list[str]]:
        """The rows as a typed frame and each one's day. A row no file can hold (the requests
        are checked so that none arrives here) is dropped and counted, not retried forever."""
        try:
            frame = pl.DataFrame(rows, infer_schema_length=None, schema_overrides=self.types)
            return rows, frame, [self._day(ts) for ts in frame["ts"].to_list()]
        except Exception:
            kept = []
            for row in rows:
                try:
                    self._day(row["ts"])
                    pl.DataFrame([row], schema_overrides=self.types)
                except Exception as error:
                    self._drop(1, f"a row no file can hold ({type(error).__name__}: {error})")
                    continue
                kept.append(row)
            if not kept:
                return [], pl.DataFrame(), []
            frame = pl.DataFrame(kept, infer_schema_length=None, schema_overrides=self.types)
            return kept, frame, [self._day(ts) for ts in frame["ts"].to_list()]

    def _day(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, timezone.utc).astimezone(self.zone).date().isoformat()

    def _write(self, day: str, part: pl.DataFrame) -> None:
        folder = self.folder / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{self.boot}-{self.sequence + 1:06d}.parquet"
        tmp = folder / f".tmp-{uuid.uuid4().hex}.part"
        try:
            part.write_parquet(tmp, statistics=True)
            with open(tmp, "rb") as handle:  # on disk before it is named: a crash keeps it whole
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self.sequence += 1

    # --- health -----------------------------------------------------------------------------
    def _failed(self, error: BaseException) -> None:
        self.health.failing = True
        self.health.failures += 1
        self.health.last_error = f"{type(error).__name__}: {error}"
        self._retry_at = time.monotonic() + self._backoff
        log.error(
            "%s: a write failed (%s); the rows stay buffered, retry in %.1f s",
            self.kind,
            self.health.last_error,
            self._backoff,
        )
        self._backoff = min(self._backoff * 2, LAST_RETRY_SECONDS)
        if self.observer:
            self.observer.write_failed(self.kind)

    def _recovered(self) -> None:
        if self.health.failing:
            log.info("%s: writing again after %d failed write(s)", self.kind, self.health.failures)
        self.health.failing = False
        self._retry_at, self._backoff = 0.0, FIRST_RETRY_SECONDS

    def _drop(self, rows: int, why: str) -> None:
        self.health.dropped += rows
        log.error("%s: %d row(s) dropped, %s", self.kind, rows, why)
        if self.observer:
            self.observer.rows_dropped(self.kind, rows)

    def _report_buffered(self, rows: int) -> None:
        if self.observer:
            self.observer.rows_buffered(self.kind, rows)


class Flusher(threading.Thread):
    """Flushes the writers every so often, so a quiet server still writes what it holds. It
    never dies of a write's error: the writer keeps the rows, and this loop tries again."""

    def __init__(self, writers: list[LogWriter], every: float) -> None:
        super().__init__(name="reloop-log-flusher", daemon=True)
        self.writers, self.every = writers, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(min(self.every, 0.5)):
            for writer in self.writers:
                try:
                    if writer.due():
                        writer.flush()
                except Exception:  # a bug in writing: keep the thread, the rows stay buffered
                    log.exception("%s: the flusher met an error", writer.kind)

    def stop(self, seconds: float) -> int:
        """Stop, and write what is left within `seconds` (SIGTERM or Ctrl-C, through the app's
        shutdown); returns the rows that could not be written and were dropped."""
        self.stopped.set()
        deadline = time.monotonic() + seconds
        return sum(writer.stop(deadline) for writer in self.writers)
