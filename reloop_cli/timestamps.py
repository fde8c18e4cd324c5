"""A log's time column, whatever its type, -> a UTC instant and the calendar day the row belongs to.

A wrong day is the worst failure a nightly job can have (the window, the ỹ_last join, the gate and
every metric after it are then about the wrong data), so every reading is explicit:

| the column holds                        | it is read as                                         |
|-----------------------------------------|-------------------------------------------------------|
| timestamp with a time zone (any unit)   | that instant                                          |
| timestamp without a zone                | wall-clock time in `data.source_timezone` (UTC)       |
| date                                    | that calendar day                                     |
| integers or decimals                    | epoch in `data.time_unit`; `auto`: < 1e11 seconds,    |
|                                         | < 1e14 milliseconds, < 1e17 microseconds, else ns     |
| strings, with `data.time_format`        | that strftime pattern (a pattern without a time of   |
|                                         | day gives a calendar day)                             |
| strings, without it                     | a number as above, else ISO-8601: `T` or a space,     |
|                                         | fractional seconds, `Z` or an offset, or a bare date  |

An instant belongs to its local date in `data.timezone` (a day with a daylight-saving change is
23 or 25 hours long there); a calendar day is that day. A row dated outside
[`data.min_date`, `data.max_date`] is a bad row, with a hint where one unit or format would fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from reloop_cli.spec import DataSpec

MICROS_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# `auto`: the unit whose plausible range holds the column's median magnitude. Epoch seconds of
# 1990..2100 lie in [6.3e8, 4.1e9]; each finer unit is 1,000 times that, so these bounds fall
# between the ranges with room to spare.
AUTO_BOUNDS = (("s", 1e11), ("ms", 1e14), ("us", 1e17))
ISO_WITH_OFFSET = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")
ISO_DATE = "%Y-%m-%d"
# Dates in error messages: Polars' Date holds int32 days (+-5.8 million years); beyond, a year.
SHOWN_DAYS_LIMIT = 2_000_000_000
TIME_OF_DAY_DIRECTIVES = ("%H", "%I", "%k", "%l", "%M", "%S", "%T", "%R", "%r", "%c", "%s", "%X")


@dataclass(frozen=True)
class TimeReading:
    """Expressions over one file's frame: the instant, the row's day and what is wrong with it."""

    epoch_seconds: pl.Expr  # Int64, UTC, floored; null where unreadable
    day: pl.Expr  # Date in data.timezone; null where unreadable
    problem: pl.Expr  # String reason, null for a good time
    note: str  # how the column was read, for the ingest summary


def window(data: DataSpec, today: date | None = None) -> tuple[date, date]:
    """The plausible days [min_date, max_date]; max_date defaults to the day after today in the
    workspace's zone."""
    if data.max_date is not None:
        return date.fromisoformat(data.min_date), date.fromisoformat(data.max_date)
    today = today or datetime.now(ZoneInfo(data.timezone)).date()
    return date.fromisoformat(data.min_date), today + timedelta(days=1)


def infer_unit(magnitude: float | None) -> str:
    """The epoch unit a column's median magnitude points to (seconds when there is none)."""
    if magnitude is None:
        return "s"
    for unit, bound in AUTO_BOUNDS:
        if magnitude < bound:
            return unit
    return "ns"


def read_time(frame: pl.DataFrame, data: DataSpec, today: date | None = None) -> TimeReading:
    """How to read `data.time_column` of `frame` (its dtype decides), as expressions."""
    column = data.time_column
    assert column is not None
    dtype = frame.schema[column]
    first, last = window(data, today)
    raw = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        instant = _aware(raw, dtype, data.source_timezone)
        zone = dtype.time_zone or f"{data.source_timezone} (no zone in the data)"
        reading = _Reading(instant, None, f"timestamps[{dtype.time_unit}], zone {zone}")
        if not dtype.time_zone:
            reading.invalid_local = raw.is_not_null()
    elif dtype == pl.Date:
        reading = _Reading(None, raw, "dates: each is the row's calendar day")
    elif dtype.is_numeric():
        unit, how = _unit(frame.select(raw.cast(pl.Float64).abs().median()).item(), data)
        reading = _Reading(_from_epoch(raw, unit), None, f"epoch {UNIT_NAMES[unit]} ({how})")
        reading.hint = _unit_hint(raw.cast(pl.Float64), unit, first, last)
        reading.seconds = raw.cast(pl.Float64) * MICROS_PER[unit] / 1e6
    else:
        reading = _string_reading(frame, raw.cast(pl.String).str.strip_chars(), data)
    return reading.finish(raw, data, first, last)


@dataclass
class _Reading:
    """Partial results: an instant (Datetime, UTC) and/or a calendar day (Date) per row."""

    instant: pl.Expr | None
    calendar_day: pl.Expr | None
    note: str
    hint: pl.Expr | None = None  # text appended to an out-of-window reason
    invalid_local: pl.Expr | None = None  # a naive time that does not exist in its zone
    seconds: pl.Expr | None = None  # unclipped epoch seconds (Float64), to show far-off dates

    def finish(self, raw: pl.Expr, data: DataSpec, first: date, last: date) -> TimeReading:
        local = None
        if self.instant is not None:
            local = self.instant.dt.convert_time_zone(data.timezone).dt.date()
        if self.calendar_day is not None and local is not None:
            day = pl.coalesce(self.calendar_day, local)
        else:
            day = self.calendar_day if local is None else local
        instant = self.instant
        if self.calendar_day is not None:  # a calendar day's instant: its local midnight
            midnight = _local_midnight(self.calendar_day, data.timezone)
            instant = midnight if instant is None else pl.coalesce(instant, midnight)
        seconds = instant.dt.epoch("us") // 1_000_000
        from_instant = instant.dt.epoch("us").cast(pl.Float64) / 1e6
        float_seconds = (
            from_instant if self.seconds is None else pl.coalesce(self.seconds, from_instant)
        )
        outside = ~day.is_between(pl.lit(first), pl.lit(last))
        shown = _shown(raw)
        reason = (
            pl.when(day.is_null())
            .then(_unreadable(shown, data, self.invalid_local))
            .when(outside)
            .then(
                pl.format(
                    "time '{}' is {}, outside the plausible days {}..{} "
                    "(data.min_date, data.max_date){}",
                    shown,
                    _day_text(float_seconds),
                    pl.lit(first.isoformat()),
                    pl.lit(last.isoformat()),
                    self.hint if self.hint is not None else pl.lit(""),
                )
            )
        )
        note = f"{self.note}; days end at midnight {data.timezone}"
        return TimeReading(seconds, day, reason, note)


def _unit(magnitude: float | None, data: DataSpec) -> tuple[str, str]:
    if data.time_unit != "auto":
        return data.time_unit, "data.time_unit"
    return infer_unit(magnitude), "inferred from their magnitude; set data.time_unit to fix it"


def _from_epoch(value: pl.Expr, unit: str) -> pl.Expr:
    """An epoch number in `unit` -> a UTC Datetime[us]; values far outside any plausible date are
    clipped first so the integer arithmetic cannot wrap (they are reported as out of window)."""
    factor = MICROS_PER[unit]
    limit = 9e18 / max(factor, 1)
    number = value.cast(pl.Float64, strict=False)
    integer = value.cast(pl.Int64, strict=False)
    if factor >= 1:
        exact = integer.clip(-int(limit), int(limit)) * int(factor)
        rounded = (number.clip(-limit, limit) * factor).round(0).cast(pl.Int64)
    else:  # nanoseconds: integer division keeps 19-digit values exact
        exact = integer // 1_000
        rounded = (number / 1_000).round(0).cast(pl.Int64, strict=False)
    micros = pl.coalesce(exact, rounded)
    return pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")


def _aware(value: pl.Expr, dtype: pl.Datetime, source_timezone: str) -> pl.Expr:
    """A Datetime column as UTC: a zone in the data wins, else the source zone's wall clock."""
    if dtype.time_zone:
        return value.dt.convert_time_zone("UTC")
    return _localise(value, source_timezone)


def _localise(naive: pl.Expr, zone: str) -> pl.Expr:
    """Wall-clock times in `zone` -> UTC; the repeated hour of a fall-back takes its first
    occurrence, and a time inside a spring-forward gap (it never happened there) becomes null."""
    return naive.dt.replace_time_zone(
        zone, ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")


def _string_reading(frame: pl.DataFrame, text: pl.Expr, data: DataSpec) -> _Reading:
    if data.time_format:
        return _formatted(text, data)
    number = pl.coalesce(
        text.cast(pl.Int64, strict=False).cast(pl.Float64), text.cast(pl.Float64, strict=False)
    )
    magnitude = frame.select(number.abs().median()).item()
    unit, how = _unit(magnitude, data)
    iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    with_offset = pl.coalesce(
        [iso.str.strptime(pl.Datetime("us", "UTC"), f, strict=False) for f in ISO_WITH_OFFSET]
    )
    naive = pl.coalesce([iso.str.strptime(pl.Datetime("us"), f, strict=False) for f in ISO_NAIVE])
    epoch = pl.when(number.is_not_null()).then(_from_epoch(text, unit))
    instant = pl.coalesce(epoch, with_offset, _localise(naive, data.source_timezone))
    calendar = iso.str.strptime(pl.Date, ISO_DATE, strict=False)
    note = "strings: ISO-8601"
    if magnitude is not None:
        note += f" or epoch {UNIT_NAMES[unit]} ({how})"
    reading = _Reading(instant, calendar, note)
    epoch_seconds = number * MICROS_PER[unit] / 1e6
    reading.seconds = pl.when(number.is_not_null()).then(epoch_seconds)
    reading.hint = (
        pl.when(number.is_not_null())
        .then(_unit_hint(number, unit, *window(data)))
        .otherwise(pl.lit(""))
    )
    reading.invalid_local = naive.is_not_null() & with_offset.is_null() & number.is_null()
    return reading


def _formatted(text: pl.Expr, data: DataSpec) -> _Reading:
    fmt = data.time_format
    assert fmt is not None
    if not any(d in fmt for d in TIME_OF_DAY_DIRECTIVES):
        day = text.str.strptime(pl.Date, fmt, strict=False)
        return _Reading(None, day, f"strings in data.time_format '{fmt}': calendar days")
    if "%H" in fmt and "%M" not in fmt:  # Polars parses an hour only with its minutes
        text, fmt = text + "00", fmt + "%M"
    if "%z" in fmt or "%#z" in fmt or "%:z" in fmt:
        instant = text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False)
        return _Reading(instant, None, f"strings in data.time_format '{data.time_format}'")
    naive = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
    reading = _Reading(
        _localise(naive, data.source_timezone),
        None,
        f"strings in data.time_format '{data.time_format}', wall clock in {data.source_timezone}",
    )
    reading.invalid_local = naive.is_not_null()
    return reading


def _local_midnight(day: pl.Expr, zone: str) -> pl.Expr:
    """The first instant of a calendar day in `zone` (01:00 where midnight itself was skipped)."""
    midnight = day.cast(pl.Datetime("us"))
    return pl.coalesce(_localise(midnight, zone), _localise(midnight + pl.duration(hours=1), zone))


def _unit_hint(value: pl.Expr, unit: str, first: date, last: date) -> pl.Expr:
    """'; looks like milliseconds: set ...' where another epoch unit (or a YYYYMMDD reading)
    would put the value inside the plausible days; empty otherwise."""
    low = (first - date(1970, 1, 1)).days * 86_400.0
    high = ((last - date(1970, 1, 1)).days + 1) * 86_400.0
    hint = pl.lit("")
    yyyymmdd = (
        value.cast(pl.Int64, strict=False)
        .cast(pl.String)
        .str.strptime(pl.Date, "%Y%m%d", strict=False)
    )
    hint = (
        pl.when(yyyymmdd.is_between(pl.lit(first), pl.lit(last)))
        .then(pl.lit('; looks like a YYYYMMDD date: set data.time_format = "%Y%m%d"'))
        .otherwise(hint)
    )
    for other in reversed(list(MICROS_PER)):
        if other == unit:
            continue
        seconds = value * MICROS_PER[other] / 1_000_000
        text = f'; looks like {UNIT_NAMES[other]}: set data.time_unit = "{other}"'
        hint = pl.when(seconds.is_between(low, high)).then(pl.lit(text)).otherwise(hint)
    return hint


def _day_text(seconds: pl.Expr) -> pl.Expr:
    """The UTC day of an epoch second, as text, also for values far outside any real date."""
    days = seconds / 86_400
    exact = (
        days.floor().clip(-SHOWN_DAYS_LIMIT, SHOWN_DAYS_LIMIT).cast(pl.Int32).cast(pl.Date)
    ).cast(pl.String)
    year = (1970 + days / 365.2425).round(0).cast(pl.Int64).cast(pl.String)
    return pl.when(days.abs() < SHOWN_DAYS_LIMIT).then(exact).otherwise("a day in year " + year)


def _shown(raw: pl.Expr) -> pl.Expr:
    return raw.cast(pl.String).fill_null("(empty)")


def _unreadable(shown: pl.Expr, data: DataSpec, invalid_local: pl.Expr | None) -> pl.Expr:
    how = f"data.time_format '{data.time_format}'" if data.time_format else "a time"
    plain = pl.format("time '{}' not parseable as " + how, shown)
    if invalid_local is None:
        return plain
    gap = pl.format(
        "time '{}' does not exist in " + data.source_timezone + " (a daylight-saving gap)", shown
    )
    return pl.when(invalid_local).then(gap).otherwise(plain)
