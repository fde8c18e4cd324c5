"""What form each categorical column's values take, recorded with the workspace, so that the same
value is the same text on every day, whatever type the export wrote it in.

A categorical value is looked up by its text. An upstream job that starts allowing nulls writes
an integer column as floats (`position` 8 becomes 8.0), and the text "8.0" is a value no version
has seen: every row of the field falls to the out-of-vocabulary row, silently. So each column's
values are read in one canonical form: integers as integer text ("8"), an integral float as its
integer ("8.0" and 8.0 read "8"), other numbers and text as they are. And the form of each
column is recorded (`features/columns.json`): integer, decimal or text, with an example. A column
whose values all change form between numbers and text (`device` was "mobile", now 1; or the
reverse) is a different encoding, not new values: it is refused with one line naming both forms.
A column of mixed numbers and text takes both and is recorded as text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import polars as pl

from reloop_cli.errors import BadInput
from reloop_cli.store.workspace import Workspace

INTEGER, DECIMAL, TEXT = "integer", "decimal", "text"
NUMERIC = (INTEGER, DECIMAL)
INTEGRAL_FLOAT_TEXT = r"^(-?(?:0|[1-9][0-9]*))\.0+$"  # "8.0", "-12.00": the integer, as a float
EXACT_FLOAT = 2.0**53  # integral floats beyond this are not exact integers


@dataclass(frozen=True)
class ColumnType:
    """The form of a column's values: `kind` (integer, decimal or text), one `example` value,
    and for text whether any value was a number."""

    kind: str
    example: str | None = None
    numbers_seen: bool = True

    def merged(self, other: ColumnType) -> ColumnType:
        """The form of both together (integer + decimal is decimal; any text makes it text)."""
        if self.kind == other.kind:
            return self
        if self.kind in NUMERIC and other.kind in NUMERIC:
            return ColumnType(DECIMAL, self.example)
        text = self if self.kind == TEXT else other
        return ColumnType(TEXT, text.example, True)

    def to_dict(self) -> dict:
        return asdict(self)


def load(ws: Workspace) -> dict[str, ColumnType]:
    """The recorded form of each categorical column (empty before the first ingest)."""
    if not ws.column_types_path.exists():
        return {}
    raw = json.loads(ws.column_types_path.read_text(encoding="utf-8"))
    return {name: ColumnType(**entry) for name, entry in raw.items()}


def save(ws: Workspace, types: dict[str, ColumnType]) -> None:
    ws.write_json({name: t.to_dict() for name, t in sorted(types.items())}, ws.column_types_path)


def categorical_text(frame: pl.DataFrame, column: str) -> tuple[pl.Expr, ColumnType]:
    """The canonical text of a categorical column, and the form of this frame's values."""
    values, dtype = pl.col(column), frame.schema[column]
    example = _example(frame, column)
    if dtype.is_integer():
        return values.cast(pl.String), ColumnType(INTEGER, example)
    if dtype.is_float():
        integral = (values == values.floor()) & (values.abs() < EXACT_FLOAT)
        as_integer = values.cast(pl.Int64, strict=False).cast(pl.String)
        text = pl.when(integral).then(as_integer).otherwise(values.cast(pl.String))
        all_integral = bool(
            frame.select((integral.fill_null(False) | values.is_null()).all()).item()
        )
        return text, ColumnType(INTEGER if all_integral else DECIMAL, example)
    if dtype != pl.String:
        return values.cast(pl.String), ColumnType(TEXT, example, numbers_seen=False)
    return _string_text(frame, column, example)


def _string_text(
    frame: pl.DataFrame, column: str, example: str | None
) -> tuple[pl.Expr, ColumnType]:
    """Text as it came, but "8.0" read as "8" in a column of numbers. Casts and prefix tests
    decide the form (a regex over every row of a 10M-row CSV costs seconds)."""
    values = pl.col(column)
    present = values.is_not_null()
    # Zero-padded codes ("00012") and signed text ("+5") are text, though they parse as numbers.
    padded = (
        (values.str.starts_with("0") & (values.str.len_bytes() > 1))
        | values.str.starts_with("-0")
        | values.str.starts_with("+")
    ).fill_null(False)
    integer = values.cast(pl.Int64, strict=False).is_not_null() & ~padded
    number = values.cast(pl.Float64, strict=False).is_not_null() & ~(
        padded & ~values.str.starts_with("0.")
    )
    seen = frame.select(
        all_integer=integer.filter(present).all(), any_integer=integer.filter(present).any()
    ).row(0, named=True)
    if seen["all_integer"]:
        return values, ColumnType(INTEGER, example)
    if frame.select(number.filter(present).all()).item():
        integral = integer | values.str.contains(INTEGRAL_FLOAT_TEXT).fill_null(False)
        decimal = frame.select((~integral).filter(present).any()).item()
        kind = DECIMAL if decimal else INTEGER
        return values.str.replace(INTEGRAL_FLOAT_TEXT, "${1}"), ColumnType(kind, example)
    return values, ColumnType(TEXT, example, numbers_seen=bool(seen["any_integer"]))


def _example(frame: pl.DataFrame, column: str) -> str | None:
    present = frame.get_column(column).drop_nulls()
    return str(present[0]) if present.len() else None


def check_form(
    source: str, column: str, recorded: ColumnType | None, seen: ColumnType
) -> ColumnType:
    """The column's form after this batch; refuses a batch whose values all changed form."""
    if recorded is None or seen.example is None:
        return seen if recorded is None else recorded
    numbers_to_text = recorded.kind in NUMERIC and seen.kind == TEXT and not seen.numbers_seen
    text_to_numbers = recorded.kind == TEXT and not recorded.numbers_seen and seen.kind in NUMERIC
    if numbers_to_text or text_to_numbers:
        before = "numbers" if recorded.kind in NUMERIC else "text"
        now = "numbers" if seen.kind in NUMERIC else "text"
        raise BadInput(
            f"{source}: categorical field '{column}' held {before} on the days ingested before "
            f"(e.g. '{recorded.example}') and now holds {now} (e.g. '{seen.example}'): that is "
            "another encoding, not new values; write it as before upstream, or use a new workspace"
        )
    return recorded.merged(seen)
