"""Raw log files (CSV, TSV, Parquet, libfm) -> one Polars frame each, with errors naming the file.

Readers keep every value as it came (CSV cells as strings) and add a 1-based `_row` column, so
validation downstream can name the exact row that is wrong.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from reloop_cli.errors import BadInput
from reloop_cli.spec import DataSpec

ROW = "_row"
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".libfm": "libfm",
    ".svm": "libfm",
}


def detect_format(path: Path, data: DataSpec) -> str:
    """The spec's format if it names one, else the file extension's."""
    if data.format:
        return data.format
    suffixes = [s for s in path.suffixes if s not in (".gz",)]
    fmt = EXTENSIONS.get(suffixes[-1].lower()) if suffixes else None
    if fmt is None:
        raise BadInput(f"{path}: cannot tell the format from the extension; set data.format")
    return fmt


def read_raw(path: Path, data: DataSpec) -> pl.DataFrame:
    """Read one raw log file; every problem is a `BadInput` naming the file."""
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: file is empty")
    fmt = detect_format(path, data)
    try:
        if fmt == "libfm":
            frame = _read_libfm(path, data)
        elif fmt == "parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(
                path,
                separator="," if fmt == "csv" else "\t",
                infer_schema=False,
                has_header=not data.columns,
                new_columns=list(data.columns) or None,
                quote_char=None if fmt == "tsv" else '"',
            )
    except BadInput:
        raise
    except (pl.exceptions.PolarsError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInput(f"{path}: cannot read as {fmt}: {first_line}") from None
    if frame.height == 0:
        raise BadInput(f"{path}: file has no rows")
    return frame.with_row_index(ROW, offset=1)


def _read_libfm(path: Path, data: DataSpec) -> pl.DataFrame:
    """libfm lines `label idx:val idx:val ...`, one token per field in `data.categorical` order.

    The label (1/-1 or 1/0) goes to the spec's label column; each field keeps its feature index
    as a string value, which the vocabulary then maps like any categorical value.
    """
    fields = data.categorical
    if not fields:
        raise BadInput(f"{path}: libfm needs data.categorical to name the fields in line order")
    lines = pl.read_csv(
        path,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        new_columns=["line"],
        infer_schema=False,
    )
    tokens = lines.select(pl.col("line").str.strip_chars().str.split(" ").alias("tok"))
    bad_count = tokens.with_row_index("n", offset=1).filter(
        pl.col("tok").list.len() != len(fields) + 1
    )
    if bad_count.height:
        line_no = bad_count["n"][0]
        found = bad_count["tok"].list.len()[0] - 1
        raise BadInput(
            f"{path}: line {line_no}: expected a label and {len(fields)} idx:value tokens, "
            f"found {found} tokens"
        )
    columns = [pl.col("tok").list.get(0).alias(data.label)]
    for i, name in enumerate(fields, start=1):
        columns.append(pl.col("tok").list.get(i).alias(name))
    frame = tokens.select(columns)
    malformed = frame.with_row_index("n", offset=1).filter(
        pl.any_horizontal([~pl.col(f).str.contains(r"^[^:\s]+:[^:\s]+$") for f in fields])
    )
    if malformed.height:
        line_no = malformed["n"][0]
        raise BadInput(f"{path}: line {line_no}: a feature token is not of the form idx:value")
    label = pl.col(data.label)
    return frame.with_columns(
        pl.when(label == "-1").then(pl.lit("0")).otherwise(label).alias(data.label),
        *[pl.col(f).str.split(":").list.first().alias(f) for f in fields],
    )
