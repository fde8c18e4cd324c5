"""What a valid ingested row is: the spec's columns present, each value checked and read in its
canonical form, and a reason beside every row that is not good.

Checks run as Polars expressions over the whole file; a bad row keeps its `_row` number and gets
a `reject_reason`, so the error (or the rejects/ file) names the exact row and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from reloop_cli.columns import (
    DAY,
    IMPRESSION_ID,
    LABEL,
    ORACLE,
    PROPENSITY,
    REJECT_REASON,
    REQUEST_ID,
    SERVED_PCTR,
    TS,
)
from reloop_cli.data import timestamps
from reloop_cli.data.column_types import ColumnType, categorical_text
from reloop_cli.data.readers import ROW
from reloop_cli.errors import BadInput
from reloop_cli.spec.data import DataSpec


def require_columns(path: Path, frame: pl.DataFrame, data: DataSpec) -> None:
    wanted = [("label", data.label)]
    wanted += [("categorical field", c) for c in data.categorical]
    wanted += [("numeric field", c) for c in data.numeric]
    wanted += [("multivalued field", c) for c in data.multivalued]
    for role, column in (
        ("time column", data.time_column),
        ("impression id column", data.impression_id),
        ("pctr column", data.pctr),
        ("oracle column", data.oracle),
        ("request id column", data.request_id),
        ("propensity column", data.propensity),
    ):
        if column:
            wanted.append((role, column))
    for role, column in wanted:
        if column not in frame.columns:
            shown = ", ".join(c for c in frame.columns if c != ROW)
            raise BadInput(f"{path}: missing {role} '{column}' (columns: {shown})")


def _shown(column: str) -> pl.Expr:
    """A raw value as it reads in an error message (a null would blank the whole message)."""
    return pl.col(column).cast(pl.String).fill_null("(empty)")


def _as_float(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64, strict=False)


def _as_value_list(column: str, dtype: pl.DataType, separator: str) -> pl.Expr:
    """A multivalued field as a list of strings: a list column's items, or a string split at
    `separator`; blanks are dropped and a null becomes the empty list."""
    if isinstance(dtype, (pl.List, pl.Array)):
        values = pl.col(column).cast(pl.List(pl.String))
    else:
        values = pl.col(column).cast(pl.String).str.split(separator)
    item = pl.element().str.strip_chars()
    return values.list.eval(item.filter(item != "")).fill_null([])


@dataclass
class Normalised:
    """A file's rows in canonical columns with a `reject_reason` per row (null: good), how the
    time column was read, and the form each categorical column's values took."""

    frame: pl.DataFrame
    time_note: str | None
    forms: dict[str, ColumnType]


def _numeric(column: str, data: DataSpec) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(value, is bad, why) for a numeric field. Text that is no number is bad; so are NaN and
    infinities, unless `data.non_finite = "missing"` reads them as an empty cell."""
    value = _as_float(column)
    unreadable = pl.col(column).is_not_null() & value.is_null()
    non_finite = (value.is_nan() | value.is_infinite()).fill_null(False)
    if data.non_finite == "missing":
        value = pl.when(non_finite).then(None).otherwise(value)
        return value, unreadable, pl.format("numeric field '" + column + "' = '{}'", _shown(column))
    why = pl.format(
        "numeric field '" + column + "' = '{}' is not a finite number "
        '(data.non_finite = "missing" reads it as an empty cell)',
        _shown(column),
    )
    return value, unreadable | non_finite, why


def normalise(frame: pl.DataFrame, data: DataSpec, identity: str, today: date | None) -> Normalised:
    """Canonical columns (and `day`, for logs with a time column) plus a `reject_reason` that is
    null for a good row."""
    label = _as_float(data.label)
    checks: list[tuple[pl.Expr, pl.Expr]] = [
        (
            ~label.is_in([0.0, 1.0]).fill_null(False),
            pl.format("label '{}' is not 0 or 1", _shown(data.label)),
        )
    ]
    numerics = []
    for column in data.numeric:
        value, bad, why = _numeric(column, data)
        checks.append((bad, why))
        numerics.append(value.alias(column))
    texts, forms = {}, {}
    for column in data.categorical:
        texts[column], forms[column] = categorical_text(frame, column)
    columns = [
        (
            pl.col(data.impression_id).cast(pl.String)
            if data.impression_id
            else pl.format(identity[:12] + ":{}", pl.col(ROW))
        ).alias(IMPRESSION_ID),
        label.cast(pl.Int8, strict=False).alias(LABEL),
        *[text.alias(column) for column, text in texts.items()],
        *numerics,
        *[_as_value_list(c, frame.schema[c], data.multivalued_separator) for c in data.multivalued],
    ]
    note = None
    if data.time_column:
        frame, reading = timestamps.date_rows(frame, data, today)
        problem = pl.col(timestamps.PROBLEM)
        checks.append((problem.is_not_null(), problem))
        columns += [pl.col(timestamps.TS).alias(TS), pl.col(timestamps.DAY).alias(DAY)]
        note = f"time column '{data.time_column}': {reading}"
    columns += _serving_columns(data, checks)
    if data.impression_id:
        checks.append((pl.col(data.impression_id).is_null(), pl.lit("impression id is empty")))
        checks.append(
            (pl.col(data.impression_id).is_duplicated(), pl.lit("impression id is duplicated"))
        )
    reason = pl.lit(None, dtype=pl.String)
    for bad, text in reversed(checks):
        reason = pl.when(bad).then(text).otherwise(reason)
    selected = frame.select(pl.col(ROW), *columns, reason.alias(REJECT_REASON))
    return Normalised(selected, note, forms)


def _serving_columns(data: DataSpec, checks: list[tuple[pl.Expr, pl.Expr]]) -> list[pl.Expr]:
    """What the serving system logged beside a row: served pCTR, propensity, request id, and
    the oracle of simulated logs; each checked (a NaN pCTR is not in [0, 1])."""
    columns = []
    if data.pctr:  # missing is allowed: traffic served without a model (ỹ_last: none)
        pctr = _as_float(data.pctr)
        given = pl.col(data.pctr).is_not_null()
        bad = given & ~pctr.is_between(0, 1).fill_null(False)
        checks.append((bad, pl.format("pctr '{}' not in [0, 1]", _shown(data.pctr))))
        columns.append(pctr.alias(SERVED_PCTR))
    if data.propensity:  # empty: not chosen by the logging policy (an unranked request)
        propensity = _as_float(data.propensity)
        given = pl.col(data.propensity).is_not_null()
        bad = given & ~((propensity > 0) & (propensity <= 1)).fill_null(False)
        checks.append((bad, pl.format("propensity '{}' not in (0, 1]", _shown(data.propensity))))
        columns.append(propensity.alias(PROPENSITY))
    if data.request_id:
        checks.append((pl.col(data.request_id).is_null(), pl.lit("request id is empty")))
        columns.append(pl.col(data.request_id).cast(pl.String).alias(REQUEST_ID))
    if data.oracle:  # a true probability that is not finite is no probability: none
        oracle = _as_float(data.oracle)
        finite = oracle.is_finite().fill_null(False)
        columns.append(pl.when(finite).then(oracle).otherwise(None).alias(ORACLE))
    return columns


def assign_days(frame: pl.DataFrame, data: DataSpec, days: int | None, start: str) -> pl.DataFrame:
    """Calendar day from the time column, or `days` pseudo-days in row order."""
    if data.time_column:
        return frame.with_columns(pl.col(DAY).fill_null("unknown"))
    n_days = days or 1
    first = date.fromisoformat(start)
    names = pl.Series(DAY, [(first + timedelta(days=i)).isoformat() for i in range(n_days)])
    position = pl.Series(range(frame.height), dtype=pl.Int64) * n_days // frame.height
    return frame.with_columns(names.gather(position))


def check_rejects(path: Path, frame: pl.DataFrame, data: DataSpec) -> None:
    bad = frame.filter(pl.col(REJECT_REASON).is_not_null())
    if bad.height == 0:
        return
    allowed = data.max_reject_fraction * frame.height
    if data.max_reject_fraction == 0 or bad.height > allowed:
        first = bad.row(0, named=True)
        raise BadInput(
            f"{path}: row {first[ROW]}: {first[REJECT_REASON]} "
            f"({bad.height} bad of {frame.height} rows; data.max_reject_fraction="
            f"{data.max_reject_fraction})"
        )
