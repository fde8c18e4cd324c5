"""Raw request values -> the tensors a version reads, exactly as training encoded its rows.

Each value goes the way a logged row went: ingest's canonical form (a categorical as text, an
integral number as its integer, "8.0" as "8" in a column of numbers; a numeric field as a float;
tags split and stripped), then the vocabulary's lookup token (`features.tokens.token`, the same
expression), then its row: the version's vocabulary row (0, out of vocabulary, for a value never
seen, since evicted, or newer than the version), the stable hash for a hashed field, a tag list
for a multivalued one. The only difference from `features.encoding.encode` is how a row is
found: a dictionary per field built once when a release is loaded, so a request of 100
candidates costs 100 lookups, not a pass over a vocabulary of millions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from reloop_cli.data.column_types import INTEGRAL_FLOAT_TEXT, NUMERIC, ColumnType
from reloop_cli.features.hashing import hashed_rows
from reloop_cli.features.tokens import OOV_INDEX, token
from reloop_cli.spec.layout import categorical_fields, dense_fields
from reloop_cli.spec.pipeline import Spec


class FieldError(ValueError):
    """A request value that cannot be read the way the field is read; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class Encoded:
    """The model's inputs for a request's rows, and each row's values as logged (canonical)."""

    categorical: torch.Tensor
    dense: torch.Tensor
    logged: dict[str, list]


class RequestEncoder:
    """Encodes request rows for one release: its spec, vocabulary rows and column forms."""

    def __init__(
        self,
        spec: Spec,
        vocab: pl.DataFrame,
        field_sizes: list[int],
        forms: dict[str, ColumnType],
    ) -> None:
        self.spec, self.forms = spec, forms
        self.categorical = categorical_fields(spec)
        self.dense = dense_fields(spec)
        self.multi = set(spec.data.multivalued)
        self.buckets = {
            name: spec.vocabulary.policy(name, spec.train.min_count).hash_buckets
            for name in self.categorical
        }
        self.rows: dict[str, dict[str, int]] = {}
        for name, size in zip(self.categorical, field_sizes, strict=True):
            if self.buckets[name]:
                continue
            known = vocab.filter((pl.col("field") == name) & (pl.col("index") < size))
            self.rows[name] = dict(
                zip(known["value"].to_list(), known["index"].to_list(), strict=True)
            )

    @classmethod
    def without_vocabulary(cls, spec: Spec) -> RequestEncoder:
        """An encoder before any version exists (`serving.cold_start = "random"`): values are
        put in their canonical form for the log; every row is out of vocabulary."""
        empty = pl.DataFrame(schema={"field": pl.String, "value": pl.String, "index": pl.Int64})
        return cls(spec, empty, [1] * len(categorical_fields(spec)), {})

    @property
    def fields(self) -> tuple[str, ...]:
        return self.spec.data.feature_fields

    def encode(self, rows: list[dict[str, Any]]) -> Encoded:
        """Tensors for `rows` (field -> JSON value; a missing field is an empty cell)."""
        frame = self._canonical(rows)
        tokens = frame.select(
            [
                token(self.spec, name).alias(name)
                for name in self.categorical
                if name not in self.multi
            ]
        )
        columns = []
        for name in self.categorical:
            if name in self.multi:
                continue
            values = tokens.get_column(name)
            if self.buckets[name]:
                columns.append(hashed_rows(values, self.buckets[name]).to_numpy().astype(np.int64))
            else:
                lookup = self.rows[name]
                columns.append(
                    np.fromiter((lookup.get(v, OOV_INDEX) for v in values), np.int64, len(values))
                )
        width = self.spec.data.max_values
        for name in self.categorical:
            if name in self.multi:
                lookup = self.rows[name]
                block = np.zeros((frame.height, width), np.int64)
                for row, tags in enumerate(frame.get_column(name).to_list()):
                    known = [lookup[tag] for tag in tags if tag in lookup][:width]
                    block[row, : len(known)] = known
                columns.append(block)
        categorical = np.column_stack(columns) if columns else np.zeros((frame.height, 0), np.int64)
        dense = frame.select(
            [
                (pl.col(n).fill_null(0.0).sign() * pl.col(n).fill_null(0.0).abs().log1p())
                .cast(pl.Float32)
                .alias(n)
                for n in self.dense
            ]
        )
        dense_array = (
            dense.to_numpy().astype(np.float32)
            if self.dense
            else np.zeros((frame.height, 0), np.float32)
        )
        return Encoded(
            torch.from_numpy(np.ascontiguousarray(categorical.reshape(frame.height, -1))),
            torch.from_numpy(np.ascontiguousarray(dense_array)),
            frame.to_dict(as_series=False),
        )

    # --- the canonical form of raw JSON values, as ingest writes them -----------------------
    def _canonical(self, rows: list[dict[str, Any]]) -> pl.DataFrame:
        data = self.spec.data
        columns: dict[str, pl.Series] = {}
        for name in data.categorical:
            columns[name] = self._categorical(name, [row.get(name) for row in rows])
        for name in data.numeric:
            columns[name] = self._numeric(name, [row.get(name) for row in rows])
        for name in data.multivalued:
            columns[name] = self._tags(name, [row.get(name) for row in rows])
        return pl.DataFrame(columns)

    def _categorical(self, name: str, values: list[Any]) -> pl.Series:
        text: list[str | None] = []
        for value in values:
            if value is None or isinstance(value, str):
                text.append(value)
            elif isinstance(value, bool):
                text.append("true" if value else "false")
            elif isinstance(value, int):
                text.append(str(value))
            elif isinstance(value, float):
                if not math.isfinite(value):
                    raise FieldError(name, f"{value!r} is not a value")
                text.append(str(int(value)) if value.is_integer() else _float_text(value))
            else:
                raise FieldError(name, f"takes a string or a number, not {type(value).__name__}")
        series = pl.Series(name, text, dtype=pl.String)
        form = self.forms.get(name)
        if form is not None and form.kind in NUMERIC:  # "8.0" in a column of numbers is 8
            series = series.str.replace(INTEGRAL_FLOAT_TEXT, "${1}")
        return series

    def _numeric(self, name: str, values: list[Any]) -> pl.Series:
        numbers: list[float | None] = []
        for value in values:
            if value is None:
                numbers.append(None)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise FieldError(name, f"takes a number, not {type(value).__name__}")
            try:
                number = float(value)
            except ValueError:
                raise FieldError(name, f"'{value}' is not a number") from None
            except OverflowError:  # an integer past float's range: no number a model can read
                raise FieldError(name, "is too large for a number (over 1.8e308)") from None
            if not math.isfinite(number):
                if self.spec.data.non_finite != "missing":
                    raise FieldError(name, f"'{value}' is not a finite number")
                number = None
            numbers.append(number)
        return pl.Series(name, numbers, dtype=pl.Float64)

    def _tags(self, name: str, values: list[Any]) -> pl.Series:
        lists = []
        separator = self.spec.data.multivalued_separator
        for value in values:
            if value is None:
                items = []
            elif isinstance(value, str):
                items = value.split(separator)
            elif isinstance(value, list):
                items = [_tag_text(name, item) for item in value]
            else:
                raise FieldError(name, "takes a list of tags or a separated string")
            lists.append([t.strip() for t in items if t is not None and t.strip()])
        return pl.Series(name, lists, dtype=pl.List(pl.String))


def _float_text(value: float) -> str:
    """A float as Polars writes it when ingest casts a float column to text."""
    return pl.Series([value], dtype=pl.Float64).cast(pl.String)[0]


def _tag_text(name: str, item: Any) -> str | None:
    if item is None or isinstance(item, str):
        return item
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):  # as ingest casts a list of floats to text: 8.0 stays "8.0"
        return _float_text(item)
    raise FieldError(name, f"a tag is a string or a number, not {type(item).__name__}")
