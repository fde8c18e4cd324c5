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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from reloop_cli.errors import BadInput
from reloop_cli.spec import Spec, spec_from_dict, with_environment
from reloop_cli.vocabulary import NULL_TOKEN, OOV_INDEX, hashed_rows
from reloop_cli.workspace import Workspace


def categorical_fields(spec: Spec) -> list[str]:
    """Fields looked up in an embedding table (bucketised numerics count as categorical), in the
    order of their blocks in the table: single-valued first, multivalued last."""
    bucketised = list(spec.data.numeric) if spec.data.numeric_transform == "bucket" else []
    return [*spec.data.categorical, *bucketised, *spec.data.multivalued]


def field_slots(spec: Spec) -> list[int]:
    """Index columns per categorical field: 1, or `max_values` for a multivalued field."""
    multi = set(spec.data.multivalued)
    return [spec.data.max_values if f in multi else 1 for f in categorical_fields(spec)]


def dense_fields(spec: Spec) -> list[str]:
    """Numeric fields fed as values that scale a per-field embedding."""
    return list(spec.data.numeric) if spec.data.numeric_transform == "log" else []


def token(spec: Spec, name: str) -> pl.Expr:
    """The string a raw value is looked up by (one row per tag for a multivalued field, which
    only the vocabulary asks for)."""
    if name in spec.data.multivalued:
        return pl.col(name).explode()
    if name in spec.data.categorical:
        return pl.col(name).cast(pl.String).fill_null(NULL_TOKEN)
    # Criteo-style log-square bucketing: small values keep their own bin, large ones share.
    value = pl.col(name)
    binned = pl.when(value > 2).then((value.log() ** 2).floor()).otherwise(value.floor())
    return binned.cast(pl.Int64).cast(pl.String).fill_null(NULL_TOKEN)


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
    if "label" in frame.columns:
        label = frame["label"].cast(pl.Float32).to_numpy(writable=True)
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


def spec_path(ws: Workspace) -> Path:
    return ws.features / "spec.json"


def stored_spec(ws: Workspace) -> Spec | None:
    """The spec the workspace's logs were ingested with, if any, with RELOOP_* variables applied
    (as `load_spec` applies them to a file)."""
    path = spec_path(ws)
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    return spec_from_dict(with_environment(raw), str(path))


# The [data] settings that decide what a stored row means and how it is encoded; they are fixed
# for a workspace's life. The others say how to read a source (format, encoding, time format,
# allowances) and may change when a log source does.
FIXED_DATA_SETTINGS = (
    "label",
    "categorical",
    "numeric",
    "multivalued",
    "multivalued_separator",
    "max_values",
    "numeric_transform",
    "timezone",
)


def check_spec_fits(ws: Workspace, spec: Spec) -> None:
    """Refuse a spec whose fixed [data] settings differ from the workspace's; writes nothing."""
    previous = stored_spec(ws)
    if previous is None:
        return
    if previous.data.timezone != spec.data.timezone and ws.days():
        raise BadInput(
            f"{spec.source}: data.timezone '{spec.data.timezone}' differs from "
            f"'{previous.data.timezone}', the zone this workspace's days were cut in "
            f"({spec_path(ws)}); days cannot be re-cut: keep the zone or use a new workspace"
        )
    old, new = previous.to_dict()["data"], spec.to_dict()["data"]
    changed = [key for key in FIXED_DATA_SETTINGS if old[key] != new[key]]
    if changed:
        raise BadInput(
            f"{spec.source}: data.{changed[0]} differs from the one this workspace was ingested "
            f"with ({spec_path(ws)}); it decides how rows are encoded: use a new workspace"
        )


def remember_spec(ws: Workspace, spec: Spec) -> None:
    """Record the first ingest spec of a workspace (after `check_spec_fits` passed)."""
    if stored_spec(ws) is None:
        ws.write_json(spec.to_dict(), spec_path(ws))
