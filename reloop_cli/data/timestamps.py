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

Speed: Polars evaluates every branch of a `when/then` on every row, so the reading is chosen from
the data (a column of numbers takes the number path alone; ISO strings are parsed with the one
pattern that fits them, every pattern being tried only on rows it missed), and reasons are
written only for the rows that are bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from reloop_cli.spec.data import DataSpec

# The columns `date_rows` adds (internal names: the time column itself is often called `ts`).
TS = "_time_ts"  # Int64 epoch seconds (UTC, floored)
DAY = "_time_day"  # YYYY-MM-DD in data.timezone
PROBLEM = "_time_problem"  # why a row's time is bad; null when it is good
_KEY, _INSTANT, _CALENDAR, _NUMBER = "_time_key", "_time_instant", "_time_calendar", "_time_number"

MICROS_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# `auto`: the unit whose plausible range holds the column's median magnitude. Epoch seconds of
# 1990..2100 lie in [6.3e8, 4.1e9]; each finer unit is 1,000 times that, so these bounds fall
# between the ranges with room to spare.
AUTO_BOUNDS = (("s", 1e11), ("ms", 1e14), ("us", 1e17))
ISO_WITH_OFFSET = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")
ISO_DATE = "%Y-%m-%d"
ISO_SAMPLE_ROWS = 1_000  # rows that choose the ISO pattern the whole column is parsed with
UNIT_SAMPLE_ROWS = 100_000  # rows, spread over the file, whose median magnitude sets `auto`
# Dates in error messages: Polars' Date holds int32 days (+-5.8 million years); beyond, a year.
SHOWN_DAYS_LIMIT = 2_000_000_000
EPOCH_DAY = date(1970, 1, 1)
TIME_OF_DAY_DIRECTIVES = ("%H", "%I", "%k", "%l", "%M", "%S", "%T", "%R", "%r", "%c", "%s", "%X")


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


@dataclass
class _Reading:
    """How to read the column: expressions giving an instant (Datetime, UTC) and/or a calendar
    day (Date) per row, and, for the bad rows only, a hint and the epoch seconds to show."""

    note: str
    instant: pl.Expr | None = None
    calendar: pl.Expr | None = None
    hint: pl.Expr | None = None  # text appended to an out-of-window reason
    invalid_local: pl.Expr | None = None  # a naive time that does not exist in its zone
    seconds: pl.Expr | None = None  # unclipped epoch seconds (Float64), to show far-off dates
    fallback: _Reading | None = None  # every reading, tried on the rows this one missed


def date_rows(
    frame: pl.DataFrame, data: DataSpec, today: date | None = None
) -> tuple[pl.DataFrame, str]:
    """`frame` with TS, DAY and PROBLEM columns for `data.time_column`, and how it was read."""
    column = data.time_column
    assert column is not None
    first, last = window(data, today)
    frame = frame.with_row_index(_KEY)
    frame, reading = _choose(frame, column, data, first, last)
    dated = _apply(frame, reading, data)
    if reading.fallback is not None:
        missed = dated.filter(pl.col(_INSTANT).is_null() & pl.col(_CALENDAR).is_null())
        missed = missed.filter(pl.col(column).is_not_null())
        if missed.height:
            redone = _apply(missed.drop(_INSTANT, _CALENDAR), reading.fallback, data)
            dated = dated.update(redone.select(_KEY, _INSTANT, _CALENDAR), on=_KEY)
            reading = reading.fallback
    instant, local = pl.col(_INSTANT), pl.col(_INSTANT)
    if data.timezone != "UTC":
        local = local.dt.convert_time_zone(data.timezone)
    day = local.dt.date()
    if _has_calendar(reading):  # calendar days: the day as given, its instant local midnight
        instant = pl.coalesce(instant, _local_midnight(pl.col(_CALENDAR), data.timezone))
        day = pl.coalesce(pl.col(_CALENDAR), day)
    dated = dated.with_columns(
        (instant.dt.epoch("us") // 1_000_000).alias(TS), day.alias(DAY)
    ).with_columns(
        (pl.col(DAY).is_null() | ~pl.col(DAY).is_between(pl.lit(first), pl.lit(last))).alias(
            PROBLEM
        )
    )
    bad = dated.filter(pl.col(PROBLEM))
    problems = pl.lit(None, dtype=pl.String)
    if bad.height:  # reasons are written for the bad rows alone
        reasons = bad.select(_KEY, _reason(pl.col(column), reading, data, first, last).alias("r"))
        dated = dated.join(reasons, on=_KEY, how="left", maintain_order="left")
        problems = pl.col("r")
    dated = dated.with_columns(problems.alias(PROBLEM), _iso_days(dated))
    keep = [c for c in dated.columns if c not in (_KEY, _INSTANT, _CALENDAR, _NUMBER, "r")]
    return dated.select(keep), f"{reading.note}; days end at midnight {data.timezone}"


def _iso_days(dated: pl.DataFrame) -> pl.Expr:
    """The DAY column as YYYY-MM-DD text. A log holds few distinct days, so each is written
    once and looked up by its day number: 7x faster than casting 10M dates to text."""
    numbers = dated.get_column(DAY).to_physical().unique().drop_nulls().to_list()
    try:
        text = {n: (EPOCH_DAY + timedelta(days=n)).isoformat() for n in numbers}
    except OverflowError:  # days beyond year 9999 (bad rows, reported): Polars writes them
        return pl.col(DAY).cast(pl.String)
    return pl.col(DAY).to_physical().replace_strict(text, return_dtype=pl.String).alias(DAY)


def _has_calendar(reading: _Reading) -> bool:
    return reading.calendar is not None or (
        reading.fallback is not None and reading.fallback.calendar is not None
    )


def _apply(frame: pl.DataFrame, reading: _Reading, data: DataSpec) -> pl.DataFrame:
    none_instant = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    none_day = pl.lit(None, dtype=pl.Date)
    return frame.with_columns(
        (reading.instant if reading.instant is not None else none_instant).alias(_INSTANT),
        (reading.calendar if reading.calendar is not None else none_day).alias(_CALENDAR),
    )


def _choose(
    frame: pl.DataFrame, column: str, data: DataSpec, first: date, last: date
) -> tuple[pl.DataFrame, _Reading]:
    """The reading for this column's type and, for strings, for what the strings hold."""
    dtype = frame.schema[column]
    raw = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        zone = dtype.time_zone or f"{data.source_timezone} (no zone in the data)"
        reading = _Reading(f"timestamps[{dtype.time_unit}], zone {zone}")
        if dtype.time_zone:
            reading.instant = raw.dt.convert_time_zone("UTC")
        else:
            reading.instant = _localise(raw, data.source_timezone)
            reading.invalid_local = raw.is_not_null()
        return frame, reading
    if dtype == pl.Date:
        return frame, _Reading("dates: each is the row's calendar day", calendar=raw)
    if dtype.is_numeric():
        frame = frame.with_columns(raw.cast(pl.Float64).alias(_NUMBER))
        integer = raw.cast(pl.Int64) if dtype.is_integer() else None  # floats keep fractions
        return frame, _epoch_reading(frame, integer, data, first, last, "numbers")
    text = raw.cast(pl.String)
    if data.time_format:
        return frame, _formatted(text.str.strip_chars(), data)
    integers, values = frame.select(
        text.cast(pl.Int64, strict=False).count().alias("integers"), text.count().alias("values")
    ).row(0)
    if integers and integers == values:  # a column of whole numbers, as CSV text: the fast path
        frame = frame.with_columns(
            text.cast(pl.Int64, strict=False).cast(pl.Float64).alias(_NUMBER)
        )
        integer = text.cast(pl.Int64, strict=False)
        return frame, _epoch_reading(frame, integer, data, first, last, "numbers as text")
    text = text.str.strip_chars()
    frame = frame.with_columns(
        pl.coalesce(
            text.cast(pl.Int64, strict=False).cast(pl.Float64), text.cast(pl.Float64, strict=False)
        ).alias(_NUMBER)
    )
    numbers = frame.select(pl.col(_NUMBER).count()).item()
    if numbers and numbers == values:  # numbers with decimals (or padding)
        integer = text.cast(pl.Int64, strict=False)
        return frame, _epoch_reading(frame, integer, data, first, last, "numbers as text")
    iso = _iso_reading(frame, text, data)
    if numbers:  # numbers and ISO strings mixed: each row by what it holds
        integer = text.cast(pl.Int64, strict=False)
        epoch = _epoch_reading(frame, integer, data, first, last, "numbers as text")
        iso.fallback = _Reading(
            f"{iso.note} or epoch {epoch.note.split('epoch ', 1)[1]}",
            instant=pl.coalesce(epoch.instant, iso.fallback.instant),
            calendar=iso.fallback.calendar,
            hint=epoch.hint,
            seconds=epoch.seconds,
            invalid_local=iso.fallback.invalid_local,
        )
    return frame, iso


def _epoch_reading(
    frame: pl.DataFrame,
    integer: pl.Expr | None,
    data: DataSpec,
    first: date,
    last: date,
    what: str,
) -> _Reading:
    number = pl.col(_NUMBER)
    if data.time_unit != "auto":
        unit, how = data.time_unit, "data.time_unit"
    else:
        spread = frame.gather_every(max(1, frame.height // UNIT_SAMPLE_ROWS))
        unit = infer_unit(spread.select(number.abs().median()).item())
        how = "inferred from their magnitude; set data.time_unit to fix it"
    return _Reading(
        f"{what}: epoch {UNIT_NAMES[unit]} ({how})",
        instant=pl.when(number.is_not_null()).then(_from_epoch(integer, number, unit)),
        hint=_unit_hint(number, unit, first, last),
        seconds=number * MICROS_PER[unit] / 1e6,
    )


def _from_epoch(integer: pl.Expr | None, number: pl.Expr, unit: str) -> pl.Expr:
    """An epoch number in `unit` -> a UTC Datetime[us]: integers (`integer`, null where a value
    is not one) exactly, decimals (`number`) rounded to the microsecond; values far outside any
    plausible date are clipped first so the arithmetic cannot wrap (they are reported as out of
    the window)."""
    factor = MICROS_PER[unit]
    limit = 9e18 / max(factor, 1)
    if factor >= 1:
        rounded = (number.clip(-limit, limit) * factor).round(0).cast(pl.Int64)
        exact = None if integer is None else integer.clip(-int(limit), int(limit)) * int(factor)
    else:  # nanoseconds: integer division keeps 19-digit values exact
        rounded = (number / 1_000).round(0).cast(pl.Int64, strict=False)
        exact = None if integer is None else integer // 1_000
    micros = rounded if exact is None else pl.coalesce(exact, rounded)
    return pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")


def _localise(naive: pl.Expr, zone: str) -> pl.Expr:
    """Wall-clock times in `zone` -> UTC; the repeated hour of a fall-back takes its first
    occurrence, and a time inside a spring-forward gap (it never happened there) becomes null."""
    local = naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def _iso_patterns(text: pl.Expr) -> dict[str, tuple[str, pl.Expr]]:
    """Each ISO-8601 form -> (kind, parsed): 'offset' instants, 'naive' wall clock, 'date'."""
    iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    forms = {
        f: ("offset", iso.str.strptime(pl.Datetime("us", "UTC"), f, strict=False))
        for f in ISO_WITH_OFFSET
    }
    forms |= {f: ("naive", iso.str.strptime(pl.Datetime("us"), f, strict=False)) for f in ISO_NAIVE}
    forms[ISO_DATE] = ("date", iso.str.strptime(pl.Date, ISO_DATE, strict=False))
    return forms


def _iso_reading(frame: pl.DataFrame, text: pl.Expr, data: DataSpec) -> _Reading:
    """ISO strings: parsed with the pattern that fits most of a sample of them; every pattern is
    tried (in `fallback`) on the rows that one missed."""
    forms = _iso_patterns(text)
    sample = frame.head(ISO_SAMPLE_ROWS)
    hits = sample.select(parsed.count().alias(f) for f, (_, parsed) in forms.items()).row(0)
    best = max(zip(forms, hits, strict=True), key=lambda pair: pair[1])[0]
    note = "strings: ISO-8601"
    fallback = _Reading(note)
    offset = pl.coalesce([p for k, p in forms.values() if k == "offset"])
    naive = pl.coalesce([p for k, p in forms.values() if k == "naive"])
    fallback.instant = pl.coalesce(offset, _localise(naive, data.source_timezone))
    fallback.calendar = forms[ISO_DATE][1]
    fallback.invalid_local = naive.is_not_null() & offset.is_null()
    kind, parsed = forms[best]
    reading = _Reading(note, fallback=fallback)
    if kind == "offset":
        reading.instant = parsed
    elif kind == "naive":
        reading.instant = _localise(parsed, data.source_timezone)
        reading.invalid_local = parsed.is_not_null()
    else:
        reading.calendar = parsed
    return reading


def _formatted(text: pl.Expr, data: DataSpec) -> _Reading:
    fmt = data.time_format
    assert fmt is not None
    if not any(d in fmt for d in TIME_OF_DAY_DIRECTIVES):
        day = text.str.strptime(pl.Date, fmt, strict=False)
        return _Reading(f"strings in data.time_format '{fmt}': calendar days", calendar=day)
    if "%H" in fmt and "%M" not in fmt:  # Polars parses an hour only with its minutes
        text, fmt = text + "00", fmt + "%M"
    if "%z" in fmt or "%#z" in fmt or "%:z" in fmt:
        instant = text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False)
        return _Reading(f"strings in data.time_format '{data.time_format}'", instant=instant)
    naive = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
    return _Reading(
        f"strings in data.time_format '{data.time_format}', wall clock in {data.source_timezone}",
        instant=_localise(naive, data.source_timezone),
        invalid_local=naive.is_not_null(),
    )


def _local_midnight(day: pl.Expr, zone: str) -> pl.Expr:
    """The first instant of a calendar day in `zone` (01:00 where midnight itself was skipped)."""
    midnight = day.cast(pl.Datetime("us"))
    return pl.coalesce(_localise(midnight, zone), _localise(midnight + pl.duration(hours=1), zone))


def _reason(raw: pl.Expr, reading: _Reading, data: DataSpec, first: date, last: date) -> pl.Expr:
    """Why each (bad) row's time is refused: unreadable, or outside the plausible days."""
    shown = raw.cast(pl.String).fill_null("(empty)")
    from_instant = pl.col(_INSTANT).dt.epoch("us").cast(pl.Float64) / 1e6
    seconds = (
        from_instant if reading.seconds is None else pl.coalesce(reading.seconds, from_instant)
    )
    outside = pl.format(
        "time '{}' is {}, outside the plausible days {}..{} (data.min_date, data.max_date){}",
        shown,
        pl.when(pl.col(_CALENDAR).is_not_null())
        .then(pl.col(_CALENDAR).cast(pl.String))
        .otherwise(_day_text(seconds)),
        pl.lit(first.isoformat()),
        pl.lit(last.isoformat()),
        (reading.hint if reading.hint is not None else pl.lit("")).fill_null(""),
    )
    return pl.when(pl.col(DAY).is_null()).then(_unreadable(shown, data, reading)).otherwise(outside)


def _unit_hint(value: pl.Expr, unit: str, first: date, last: date) -> pl.Expr:
    """'; looks like milliseconds: set ...' where another epoch unit (or a YYYYMMDD reading)
    would put the value inside the plausible days; empty otherwise."""
    low = (first - date(1970, 1, 1)).days * 86_400.0
    high = ((last - date(1970, 1, 1)).days + 1) * 86_400.0
    yyyymmdd = (
        value.cast(pl.Int64, strict=False)
        .cast(pl.String)
        .str.strptime(pl.Date, "%Y%m%d", strict=False)
    )
    hint = (
        pl.when(yyyymmdd.is_between(pl.lit(first), pl.lit(last)))
        .then(pl.lit('; looks like a YYYYMMDD date: set data.time_format = "%Y%m%d"'))
        .otherwise(pl.lit(""))
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


def _unreadable(shown: pl.Expr, data: DataSpec, reading: _Reading) -> pl.Expr:
    how = f"data.time_format '{data.time_format}'" if data.time_format else "a time"
    plain = pl.format("time '{}' not parseable as " + how, shown)
    if reading.invalid_local is None:
        return plain
    gap = pl.format(
        "time '{}' does not exist in " + data.source_timezone + " (a daylight-saving gap)", shown
    )
    return pl.when(reading.invalid_local).then(gap).otherwise(plain)
