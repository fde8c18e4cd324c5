"""The server's log files as a nightly run finds them: each one read and checked before it is
used, a damaged one moved to quarantine with its reason, so one bad file never stops a night.

A file the server wrote is whole (written under a temporary name, fsync'd, renamed), but a disk,
a copy tool or a person can still leave a 0-byte file, a truncated one, one without its time
column or with text where a number belongs. Each is named with its path and what is wrong, and
set aside (`store/quarantine.py`); the join goes on with the rest. A file is checked once: an
impression file until it is joined, a click file the first night it is seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from reloop_cli.serving.logs import CLICKS, IMPRESSIONS
from reloop_cli.store.quarantine import Quarantined, quarantine
from reloop_cli.store.workspace import Workspace

TIME_COLUMN = "ts"
ID_COLUMN = "impression_id"


@dataclass
class ServerLogs:
    """The usable files of a log folder, keyed by their path under it, and what was set aside."""

    impressions: dict[str, Path] = field(default_factory=dict)
    clicks: dict[str, Path] = field(default_factory=dict)
    newest: dict[str, float] = field(default_factory=dict)  # unjoined impression file -> newest ts
    quarantined: list[Quarantined] = field(default_factory=list)


def _files(log_dir: Path, kind: str) -> list[Path]:
    return sorted((log_dir / kind).glob("day=*/*.parquet"))


def read_server_logs(
    ws: Workspace, log_dir: Path, joined: set[str], seen_clicks: set[str]
) -> ServerLogs:
    """Every impression and click file under `log_dir`; those not joined (impressions) or not
    seen (clicks) yet are checked, and a damaged one is quarantined."""
    logs = ServerLogs()
    for kind, known, usable in (
        (IMPRESSIONS, joined, logs.impressions),
        (CLICKS, seen_clicks, logs.clicks),
    ):
        for path in _files(log_dir, kind):
            key = str(path.relative_to(log_dir))
            if key in known:
                usable[key] = path
                continue
            problem, newest = check_file(path)
            if problem is not None:
                name = key.removeprefix(f"{kind}/").replace("/", "__")
                logs.quarantined.append(quarantine(ws, kind, path, problem, name))
                continue
            usable[key] = path
            if kind == IMPRESSIONS:
                logs.newest[key] = newest
    return logs


def check_file(path: Path) -> tuple[str | None, float]:
    """(what is wrong with a server log file, or None; its newest time)."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes), not Parquet", 0.0
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # Polars, Arrow and the OS word a damaged file differently
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"not a readable Parquet file ({size:,} bytes; {first[:200]})", 0.0
    for column in (ID_COLUMN, TIME_COLUMN):
        if column not in frame.columns:
            return f"no column '{column}' (columns: {', '.join(frame.columns)})", 0.0
    if frame.height == 0:
        return "no rows (a server never writes an empty file)", 0.0
    times = frame[TIME_COLUMN]
    if not times.dtype.is_numeric():
        return f"column '{TIME_COLUMN}' holds {times.dtype}, not epoch seconds", 0.0
    seconds = times.cast(pl.Float64)
    if seconds.null_count() or not seconds.is_finite().all():
        return f"column '{TIME_COLUMN}' has empty or non-finite times", 0.0
    ids = frame[ID_COLUMN]
    if ids.dtype != pl.String or ids.null_count():
        return f"column '{ID_COLUMN}' is not text in every row ({ids.dtype})", 0.0
    return None, float(seconds.max())


def scan_ids(paths: list[Path]) -> pl.DataFrame:
    """Impression id and time of every row of these (checked) files."""
    if not paths:
        return pl.DataFrame(schema={ID_COLUMN: pl.String, TIME_COLUMN: pl.Float64})
    frames = [
        pl.scan_parquet(path).select(ID_COLUMN, pl.col(TIME_COLUMN).cast(pl.Float64))
        for path in paths
    ]
    return pl.concat(frames).collect()
