"""The click join: the server's impression and click logs -> labelled training rows, with every
click accounted for once.

An impression is labelled 1 when a click for its impression id arrived within
`data.attribution_window` of it, else 0; but only once that window has closed. An impression
whose window is still open when the run starts is held back, and labelled by a later run,
instead of being trained on as a non-click before its click could arrive. The unit of work is an
impression file: it is joined once every impression in it has closed (its newest impression's
time plus the window, plus `serving.flush_seconds` for the last clicks to reach the disk).

Every click ends in exactly one count, in the run that settles it:

    clicks_labelled    inside its impression's window, when that impression is joined
    before_impression  timed before the impression it names
    after_window       after its impression's window closed
    after_join         inside its window, but written to disk after its impression was joined
                       (the label went out as 0: a loss to watch)
    unknown_clicks     for an impression id no impression file holds, once the click is older
                       than the window plus the flush slack (an impression delayed that long
                       is not coming)

Clicks for impressions still held back wait for their impression's join. Which run saw a click
file first, and the newest `as_of`, are kept in the join records (`serving/joined/*.json`), so a
click is never counted twice however often the nightly run reads the same files.

Each join writes one labelled file (`serving/joined/<key>.parquet`, its key a hash of the
impression files it covers) and then its record, which marks those files joined; joining the
same files again gives the same rows, and ingest skips what it holds (by content, and by
impression id). Damaged log files are quarantined, never joined (`server_logs.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from reloop_cli.serving.server_logs import ID_COLUMN, read_server_logs, scan_ids
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.serving import duration_seconds
from reloop_cli.store.workspace import Workspace

LABEL_COLUMN = "label"
TIME_COLUMN = "ts"
CLICK_RECORD_PREFIX = "clicks-"  # a record of a run that joined no impression file
# Where each click ends, once: together they count every click the logs hold, once settled.
CLICK_FATES = (
    "clicks_labelled",
    "before_impression",
    "after_window",
    "after_join",
    "unknown_clicks",
)


@dataclass
class JoinResult:
    """What one join did: the labelled file it wrote (if any) and what it counted."""

    files: list[str] = field(default_factory=list)  # labelled files written by this join
    impressions: int = 0  # rows labelled now
    clicked: int = 0  # of those, with a click in the window
    held_back: int = 0  # impressions whose window is still open: a later run labels them
    held_back_days: list[str] = field(default_factory=list)  # the days those fall on
    clicks_labelled: int = 0  # clicks inside the window of an impression joined now
    before_impression: int = 0  # clicks timed before their impression
    after_window: int = 0  # clicks after their impression's window
    after_join: int = 0  # clicks inside the window that reached disk after the join
    unknown_clicks: int = 0  # clicks for ids no impression file holds, each counted once
    quarantined: list[dict] = field(default_factory=list)  # damaged files set aside

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line with every count, as `reloop run --from-server` prints it."""
        return (
            f"click join: {self.impressions:,} impressions labelled ({self.clicked:,} clicked, "
            f"{self.clicks_labelled:,} clicks), {self.held_back:,} held back until their window "
            f"closes; clicks not labelling: {self.unknown_clicks:,} for unknown impressions, "
            f"{self.before_impression:,} before their impression, {self.after_window:,} after "
            f"their window, {self.after_join:,} arrived after their impression was joined"
            + (f"; {len(self.quarantined)} file(s) quarantined" if self.quarantined else "")
        )


@dataclass
class JoinHistory:
    """What earlier joins did, read from their records: the impression files joined, the click
    files seen and in which join, the joins' count and the newest `as_of`."""

    parts: set[str] = field(default_factory=set)
    click_files: dict[str, int] = field(default_factory=dict)
    sequence: int = 0
    watermark: float = float("-inf")

    @classmethod
    def read(cls, ws: Workspace) -> JoinHistory:
        history = cls()
        for record in ws.joined.glob("*.json"):
            fields = json.loads(record.read_text(encoding="utf-8"))
            sequence = int(fields.get("sequence", 0))  # records before 0.2 had none
            history.parts.update(fields["parts"])
            for name in fields.get("click_files", []):
                history.click_files.setdefault(name, sequence)
            history.sequence = max(history.sequence, sequence)
            history.watermark = max(history.watermark, float(fields.get("as_of", "-inf")))
        return history


def served_spec(spec: Spec) -> Spec:
    """The spec labelled server logs are ingested with: the user's fields and label, and the
    server's own columns for the impression id, time, served pCTR (ỹ_last, `last_source =
    "served"`), request id and propensity. A day arrives in pieces, night by night, so its
    later rows are always appended (`data.late_rows = "append"`)."""
    data = spec.override(
        "data",
        impression_id="impression_id",
        time_column=spec.data.time_column or TIME_COLUMN,
        pctr="served_pctr",
        request_id="request_id",
        propensity="propensity",
        late_rows="append",
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
    history = JoinHistory.read(ws)
    logs = read_server_logs(ws, log_dir, history.parts, set(history.click_files))
    result = JoinResult(quarantined=[q.to_dict() for q in logs.quarantined])
    pending = {key: path for key, path in logs.impressions.items() if key not in history.parts}
    closed = {
        k: p for k, p in pending.items() if logs.newest[k] + window_seconds + slack_seconds <= as_of
    }
    waiting = [key for key in pending if key not in closed]
    if waiting:
        result.held_back = sum(_rows(pending[key]) for key in waiting)
        result.held_back_days = sorted({_day_of(key) for key in waiting})
    new_clicks = sorted(key for key in logs.clicks if key not in history.click_files)
    clicks = _clicks(logs.clicks, set(new_clicks))
    earlier = scan_ids([p for k, p in logs.impressions.items() if k in history.parts])
    everything = pl.concat([earlier, scan_ids(list(pending.values()))])
    _count_late(result, clicks, earlier, window_seconds)
    settle = pl.col(TIME_COLUMN) + window_seconds + slack_seconds
    unknown = clicks.join(everything, on=ID_COLUMN, how="anti").filter(
        (settle <= as_of) & (pl.col("_new") | (settle > history.watermark))
    )
    result.unknown_clicks = unknown.height
    sequence = history.sequence + 1
    record = {"sequence": sequence, "as_of": as_of, "click_files": new_clicks}
    if not closed:
        ws.write_json(
            {**record, "parts": [], "rows": 0},
            ws.joined / f"{CLICK_RECORD_PREFIX}{sequence:06d}.json",
        )
        return result
    rows = pl.concat([pl.read_parquet(path) for path in closed.values()], how="diagonal_relaxed")
    labelled, counts = label(rows, clicks, window_seconds)
    result.impressions = labelled.height
    result.clicked = int(labelled[LABEL_COLUMN].sum())
    result.clicks_labelled, result.before_impression, result.after_window = counts
    names = {LABEL_COLUMN: spec.data.label, TIME_COLUMN: spec.data.time_column or TIME_COLUMN}
    labelled = labelled.rename({old: new for old, new in names.items() if old != new})
    keys = sorted(closed)
    name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    target = ws.joined / f"{name}.parquet"
    ws.write_parquet(labelled, target)
    ws.write_json({**record, "parts": keys, "rows": labelled.height}, ws.joined / f"{name}.json")
    result.files.append(str(target))
    return result


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _day_of(key: str) -> str:
    """'impressions/day=2024-01-04/x.parquet' -> '2024-01-04'."""
    return Path(key).parent.name.removeprefix("day=")


def _clicks(files: dict[str, Path], new: set[str]) -> pl.DataFrame:
    """Every click, with `_new`: whether its file is one no earlier join saw."""
    frames = [
        pl.scan_parquet(path).select(
            ID_COLUMN, pl.col(TIME_COLUMN).cast(pl.Float64), pl.lit(key in new).alias("_new")
        )
        for key, path in files.items()
    ]
    if not frames:
        return pl.DataFrame(
            schema={ID_COLUMN: pl.String, TIME_COLUMN: pl.Float64, "_new": pl.Boolean}
        )
    return pl.concat(frames).collect()


def _count_late(
    result: JoinResult, clicks: pl.DataFrame, earlier: pl.DataFrame, window_seconds: float
) -> None:
    """Clicks first seen now for impressions an earlier run joined: each by when it was timed."""
    late = clicks.filter(pl.col("_new")).join(earlier.rename({TIME_COLUMN: "_shown"}), on=ID_COLUMN)
    delay = late[TIME_COLUMN] - late["_shown"]
    result.before_impression += int((delay < 0).sum())
    result.after_window += int((delay > window_seconds).sum())
    result.after_join += int(((delay >= 0) & (delay <= window_seconds)).sum())


def label(
    impressions: pl.DataFrame, clicks: pl.DataFrame, window_seconds: float
) -> tuple[pl.DataFrame, tuple[int, int, int]]:
    """Impressions with `label` (1: a click within the window) and a UTC timestamp `ts`; and
    the clicks for them (inside the window, before the impression, after the window)."""
    served = impressions.select(ID_COLUMN, pl.col(TIME_COLUMN).alias("_shown"))
    matched = clicks.join(served, on=ID_COLUMN)
    delay = pl.col(TIME_COLUMN) - pl.col("_shown")
    inside = matched.filter((delay >= 0) & (delay <= window_seconds))
    before = matched.filter(delay < 0).height
    after = matched.filter(delay > window_seconds).height
    hit = inside.select(ID_COLUMN).unique().with_columns(pl.lit(1, pl.Int8).alias(LABEL_COLUMN))
    labelled = impressions.join(hit, on=ID_COLUMN, how="left", maintain_order="left")
    labelled = labelled.with_columns(
        pl.col(LABEL_COLUMN).fill_null(0).cast(pl.Int8),
        (pl.col(TIME_COLUMN) * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")),
    )
    return labelled, (inside.height, before, after)


def last_complete_day(spec: Spec, as_of: float, held_back_days: list[str]) -> str:
    """The newest day all of whose impressions' attribution windows have closed by `as_of`:
    its last impression (a moment before midnight, in `data.timezone`) closes at midnight
    plus the window plus the flush slack, and no impression file of it is still held back."""
    zone = ZoneInfo(spec.data.timezone)
    closing = duration_seconds(spec.data.attribution_window) + spec.serving.flush_seconds
    newest = datetime.fromtimestamp(as_of - closing, zone).date() - timedelta(days=1)
    if held_back_days:
        newest = min(newest, date.fromisoformat(min(held_back_days)) - timedelta(days=1))
    return newest.isoformat()


def completes_at(spec: Spec, day: str) -> str:
    """When `day`'s last attribution windows close, as an ISO time in `data.timezone`."""
    zone = ZoneInfo(spec.data.timezone)
    closing = duration_seconds(spec.data.attribution_window) + spec.serving.flush_seconds
    midnight = datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(), zone)
    return (midnight + timedelta(seconds=closing)).isoformat(timespec="seconds")
