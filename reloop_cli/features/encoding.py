"""Raw feature values -> embedding row indices and tensors a model reads.

Which value holds which row is the vocabulary's business (`vocabulary.py`: admission, capacity,
eviction, hashing); `encode` applies a vocabulary view (the assignments valid at a version's
generation) to rows. Row 0 of every field is the out-of-vocabulary row: a value never seen, since
evicted, or newer than the model maps there and scoring never breaks on it.

A multivalued field (a list of tags) shares one vocabulary of its values and becomes
`data.max_values` index columns: the row's first known values, then 0 as padding. Unknown tags are
dropped rather than sent to row 0, since the model mean-pools the known ones and skips 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from reloop_cli.columns import LABEL
from reloop_cli.features.hashing import hashed_rows
from reloop_cli.features.tokens import OOV_INDEX, token
from reloop_cli.spec.layout import categorical_fields, dense_fields
from reloop_cli.spec.pipeline import Spec


def _dense(name: str) -> pl.Expr:
    value = pl.col(name).fill_null(0.0)
    return (value.sign() * value.abs().log1p()).cast(pl.Float32)


def encode(rows: pl.LazyFrame, spec: Spec, vocab: pl.DataFrame, sizes: list[int]) -> pl.LazyFrame:
    """Replace each categorical field by its row index (< the model's size) and each dense field
    by its transformed value; other columns pass through. `vocab` is a view (field, value,
    index) at the model's generation (`vocabulary.at`)."""
    exprs = []
    for name, size in zip(categorical_fields(spec), sizes, strict=True):
        buckets = spec.vocabulary.policy(name, spec.train.min_count).hash_buckets
        if buckets:  # no vocabulary: the value's stable hash picks the row
            exprs.append(
                token(spec, name)
                .map_batches(lambda s, n=buckets: hashed_rows(s, n), return_dtype=pl.Int32)
                .alias(name)
            )
            continue
        table = vocab.filter((pl.col("field") == name) & (pl.col("index") < size))
        if name in spec.data.multivalued:
            tag = pl.element().replace_strict(
                table["value"], table["index"], default=OOV_INDEX, return_dtype=pl.Int32
            )
            known = pl.col(name).list.eval(tag.filter(tag != OOV_INDEX))
            exprs.append(known.list.head(spec.data.max_values).alias(name))
            continue
        index = token(spec, name).replace_strict(
            table["value"], table["index"], default=OOV_INDEX, return_dtype=pl.Int32
        )
        exprs.append(index.alias(name))
    exprs += [_dense(name).alias(name) for name in dense_fields(spec)]
    return rows.with_columns(exprs)


@dataclass
class TensorTable:
    """Encoded rows as tensors, aligned row for row: ỹ_last travels with its row (NaN = none)."""

    categorical: torch.Tensor  # [rows, index columns] int64: `field_slots` columns per field
    dense: torch.Tensor  # [rows, dense fields] float32
    label: torch.Tensor  # [rows] float32
    y_last: torch.Tensor  # [rows] float32, NaN where the parent has no prediction

    def __len__(self) -> int:
        return self.label.shape[0]

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield (categorical, dense, label, y_last) batches; shuffled when a generator is given."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            if order is None:
                part = slice(start, start + batch_size)
            else:
                part = order[start : start + batch_size]
            yield self.categorical[part], self.dense[part], self.label[part], self.y_last[part]


def to_tensors(frame: pl.DataFrame, spec: Spec, y_last_column: str | None = None) -> TensorTable:
    """Turn an encoded frame into a `TensorTable` (one copy, column blocks at a time)."""
    multi = set(spec.data.multivalued)
    cats, dens = categorical_fields(spec), dense_fields(spec)
    single = [c for c in cats if c not in multi]
    n = frame.height
    categorical = (
        frame.select(single).to_numpy(writable=True).astype(np.int64, copy=False)
        if single
        else np.zeros((n, 0), np.int64)
    )
    if multi:  # the padded tag columns follow the single-valued ones, as the table's blocks do
        tags = [_padded(frame[c], spec.data.max_values) for c in cats if c in multi]
        categorical = np.concatenate([categorical, *tags], axis=1)
    dense = (
        frame.select(dens).to_numpy(writable=True).astype(np.float32, copy=False)
        if dens
        else np.zeros((n, 0), np.float32)
    )
    if LABEL in frame.columns:
        label = frame[LABEL].cast(pl.Float32).to_numpy(writable=True)
    else:  # rows to score that nobody has labelled yet (a request's candidates)
        label = np.zeros(n, np.float32)
    if y_last_column and y_last_column in frame.columns:
        y_last = (
            frame[y_last_column].cast(pl.Float32).fill_null(float("nan")).to_numpy(writable=True)
        )
    else:
        y_last = np.full(n, np.nan, np.float32)
    return TensorTable(
        torch.from_numpy(np.ascontiguousarray(categorical)),
        torch.from_numpy(np.ascontiguousarray(dense)),
        torch.from_numpy(np.ascontiguousarray(label)),
        torch.from_numpy(np.ascontiguousarray(y_last)),
    )


def _padded(column: pl.Series, width: int) -> np.ndarray:
    """A list column of indices as an [rows, width] matrix, cut at `width`, padded with 0."""
    lengths = column.list.len().fill_null(0).clip(upper_bound=width).to_numpy().astype(np.int64)
    values = column.list.head(width).explode().drop_nulls().to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(len(column)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    out = np.zeros((len(column), width), np.int64)
    out[rows, np.arange(len(values)) - starts] = values
    return out
