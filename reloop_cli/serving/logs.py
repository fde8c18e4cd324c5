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
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

IMPRESSIONS, CLICKS, BOOTS = "impressions", "clicks", "boots"
BUFFER_LIMIT = 4  # times flush_rows: past it, requests are refused (503) rather than memory grow


class LogFull(RuntimeError):
    """The buffer is past its bound (the disk cannot keep up): refuse, do not grow."""


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
    ) -> None:
        self.folder, self.kind, self.boot = folder / kind, kind, boot
        # Each column's type, fixed: a file whose column is all empty (a cold start's served
        # pCTR, a field no request sent) must read as the same type as every other file.
        self.types = {"impression_id": pl.String, "ts": pl.Float64, **(types or {})}
        self.zone = ZoneInfo(zone)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.rows: list[dict] = []
        self.sequence = 0
        self.written = 0
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def append(self, rows: list[dict]) -> None:
        """Buffer rows; flush when the buffer is full. Raises `LogFull` past its bound."""
        with self._lock:
            if len(self.rows) + len(rows) > BUFFER_LIMIT * self.flush_rows:
                raise LogFull(f"{self.kind}: {len(self.rows):,} rows wait to be written")
            self.rows.extend(rows)
            due = len(self.rows) >= self.flush_rows
        if due:
            self.flush()

    def due(self) -> bool:
        return bool(self.rows) and time.monotonic() - self._last >= self.flush_seconds

    def flush(self) -> int:
        """Write what is buffered: one complete file per day the rows fall on."""
        with self._lock:
            rows, self.rows = self.rows, []
            self._last = time.monotonic()
            if not rows:
                return 0
            frame = pl.DataFrame(rows, infer_schema_length=None, schema_overrides=self.types)
            days = [
                datetime.fromtimestamp(ts, timezone.utc).astimezone(self.zone).date().isoformat()
                for ts in frame["ts"].to_list()
            ]
            frame = frame.with_columns(pl.Series("_day", days))
            for (day,), part in frame.partition_by("_day", as_dict=True).items():
                self._write(day, part.drop("_day"))
            self.written += len(rows)
            return len(rows)

    def _write(self, day: str, part: pl.DataFrame) -> None:
        folder = self.folder / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        self.sequence += 1
        target = folder / f"{self.boot}-{self.sequence:06d}.parquet"
        tmp = folder / f".tmp-{uuid.uuid4().hex}.part"
        try:
            part.write_parquet(tmp, statistics=True)
            with open(tmp, "rb") as handle:  # on disk before it is named: a crash keeps it whole
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class Flusher(threading.Thread):
    """Flushes the writers every so often, so a quiet server still writes what it holds."""

    def __init__(self, writers: list[LogWriter], every: float) -> None:
        super().__init__(name="reloop-log-flusher", daemon=True)
        self.writers, self.every = writers, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(min(self.every, 1.0)):
            for writer in self.writers:
                if writer.due():
                    writer.flush()

    def stop(self) -> None:
        """Stop and write what is left (on SIGTERM or Ctrl-C, through the app's shutdown)."""
        self.stopped.set()
        for writer in self.writers:
            writer.flush()
