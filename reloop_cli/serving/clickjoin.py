"""The click join: the server's impression and click logs -> labelled training rows.

An impression is labelled 1 when a click for its impression id arrived within
`data.attribution_window` of it, else 0; but only once that window has closed. An impression
whose window is still open when the run starts is held back, and labelled by a later run,
instead of being trained on as a non-click before its click could arrive. The unit of work is an
impression file: it is joined once every impression in it has closed (its newest impression's
time plus the window, plus `serving.flush_seconds` for the last clicks to reach the disk).

Each join writes one labelled file (`serving/joined/<key>.parquet`, its key a hash of the
impression files it covers) and then a small record of those files beside it, which marks them
joined; joining the same files again gives the same rows, and ingest skips what it holds (by
content, and by impression id). Clicks for impression ids no impression file holds are counted
and reported, never turned into rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from reloop_cli.serving.logs import CLICKS, IMPRESSIONS
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.serving import duration_seconds
from reloop_cli.store.workspace import Workspace

LABEL_COLUMN = "label"
TIME_COLUMN = "ts"


@dataclass
class JoinResult:
    """What one join did: the labelled file it wrote (if any) and what it counted."""

    files: list[str] = field(default_factory=list)  # labelled files written by this join
    impressions: int = 0  # rows labelled now
    clicked: int = 0  # of those, with a click in the window
    held_back: int = 0  # impressions whose window is still open: a later run labels them
    late_clicks: int = 0  # clicks that came for a joined impression after its window
    unknown_clicks: int = 0  # clicks for ids no impression file holds

    def to_dict(self) -> dict:
        return asdict(self)


def _parts(log_dir: Path, kind: str) -> list[Path]:
    return sorted((log_dir / kind).glob("day=*/*.parquet"))


def _joined_parts(ws: Workspace) -> set[str]:
    done: set[str] = set()
    for record in ws.joined.glob("*.json"):
        done.update(json.loads(record.read_text(encoding="utf-8"))["parts"])
    return done


def served_spec(spec: Spec) -> Spec:
    """The spec labelled server logs are ingested with: the user's fields and label, and the
    server's own columns for the impression id, time, served pCTR (ỹ_last, `last_source =
    "served"`), request id and propensity."""
    data = spec.override(
        "data",
        impression_id="impression_id",
        time_column=spec.data.time_column or TIME_COLUMN,
        pctr="served_pctr",
        request_id="request_id",
        propensity="propensity",
    )
    data = dataclasses.replace(
        data,
        data=dataclasses.replace(
            data.data, time_format=None, time_unit="auto", format=None, oracle=None, columns=()
        ),
    ).validate()
    return data.override("train", last_source="served")


def join_clicks(ws: Workspace, spec: Spec, log_dir: Path, as_of: float) -> JoinResult:
    """Label every impression file whose window has closed by `as_of` (epoch seconds) and
    that no earlier join covered; write the rows under `ws.joined`. Call under the lock."""
    window_seconds = duration_seconds(spec.data.attribution_window)
    slack_seconds = spec.serving.flush_seconds
    result = JoinResult()
    impressions = _parts(log_dir, IMPRESSIONS)
    if not impressions:
        return result
    done = _joined_parts(ws)
    closes = _newest_times(impressions)
    closed, waiting = [], []
    for part in impressions:
        key = str(part.relative_to(log_dir))
        if key in done:
            continue
        (closed if closes[part] + window_seconds + slack_seconds <= as_of else waiting).append(part)
    if waiting:
        result.held_back = pl.scan_parquet(waiting).select(pl.len()).collect().item()
    clicks = _clicks(log_dir)
    everything = pl.scan_parquet(impressions).select("impression_id").collect()
    settled = clicks.filter(pl.col(TIME_COLUMN) + slack_seconds <= as_of)
    result.unknown_clicks = settled.join(everything, on="impression_id", how="anti").height
    if not closed:
        return result
    rows = pl.scan_parquet(closed, missing_columns="insert").collect()
    labelled, result.late_clicks = label(rows, clicks, window_seconds)
    result.impressions = labelled.height
    result.clicked = int(labelled[LABEL_COLUMN].sum())
    names = {LABEL_COLUMN: spec.data.label, TIME_COLUMN: spec.data.time_column or TIME_COLUMN}
    labelled = labelled.rename({old: new for old, new in names.items() if old != new})
    keys = sorted(str(p.relative_to(log_dir)) for p in closed)
    name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    target = ws.joined / f"{name}.parquet"
    ws.write_parquet(labelled, target)
    ws.write_json({"parts": keys, "rows": labelled.height}, ws.joined / f"{name}.json")
    result.files.append(str(target))
    return result


def _newest_times(parts: list[Path]) -> dict[Path, float]:
    """Each impression file's newest time (from its Parquet statistics where present)."""
    return {
        part: float(pl.scan_parquet(part).select(pl.col(TIME_COLUMN).max()).collect().item())
        for part in parts
    }


def _clicks(log_dir: Path) -> pl.DataFrame:
    parts = _parts(log_dir, CLICKS)
    if not parts:
        return pl.DataFrame(schema={"impression_id": pl.String, TIME_COLUMN: pl.Float64})
    return (
        pl.scan_parquet(parts)
        .select("impression_id", pl.col(TIME_COLUMN).cast(pl.Float64))
        .collect()
    )


def label(
    impressions: pl.DataFrame, clicks: pl.DataFrame, window_seconds: float
) -> tuple[pl.DataFrame, int]:
    """Impressions with `label` (1: a click within the window) and a UTC timestamp `ts`; and
    how many clicks for them came after the window."""
    served = impressions.select("impression_id", pl.col(TIME_COLUMN).alias("_shown"))
    matched = clicks.join(served, on="impression_id")
    delay = pl.col(TIME_COLUMN) - pl.col("_shown")
    inside = matched.filter((delay >= 0) & (delay <= window_seconds))
    late = matched.filter(delay > window_seconds).height
    hit = (
        inside.select("impression_id").unique().with_columns(pl.lit(1, pl.Int8).alias(LABEL_COLUMN))
    )
    labelled = impressions.join(hit, on="impression_id", how="left", maintain_order="left")
    labelled = labelled.with_columns(
        pl.col(LABEL_COLUMN).fill_null(0).cast(pl.Int8),
        (pl.col(TIME_COLUMN) * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")),
    )
    return labelled, late
