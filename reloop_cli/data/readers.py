"""Raw log files (CSV, TSV, Parquet, libfm; text also gzip/bzip2/zstd-compressed) -> one Polars
frame each, with errors naming the file.

Readers keep every value as it came (CSV cells as strings) and add a 1-based `_row` column, so
validation downstream can name the exact row that is wrong. Text is read by pyarrow's CSV reader:
it decodes any encoding Python knows (`data.encoding`), decompresses by suffix, and reports a row
with too few or too many fields, which is returned beside the frame as a bad row rather than
read as shifted values.
"""

from __future__ import annotations

import codecs
import csv
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from reloop_cli.data.inputs import FORMAT_OF_SUFFIX, InputFile, compression_of, data_suffix
from reloop_cli.errors import BadInput
from reloop_cli.spec.data import DataSpec

ROW = "_row"
SHOWN_LINE_CHARS = 60  # of a malformed row's text, in its reason


@dataclass
class RawFile:
    """A file's rows as read (`_row` numbers them), and its rows that could not be split into
    the header's fields (`_row`, `reason`)."""

    frame: pl.DataFrame
    malformed: pl.DataFrame


def detect_format(path: Path, data: DataSpec) -> str:
    """The spec's format if it names one, else the file's suffix (under .gz/.bz2/.zst)."""
    if data.format:
        return data.format
    fmt = FORMAT_OF_SUFFIX.get(data_suffix(path) or "")
    if fmt is None:
        raise BadInput(f"{path}: cannot tell the format from the extension; set data.format")
    return fmt


def read_raw(source: InputFile | Path, data: DataSpec) -> RawFile:
    """Read one raw log file; every problem is a `BadInput` naming the file."""
    source = source if isinstance(source, InputFile) else InputFile(Path(source))
    path = source.path
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: file is empty")
    fmt = detect_format(path, data)
    malformed = pl.DataFrame(schema={ROW: pl.UInt32, "reason": pl.String})
    try:
        if fmt == "libfm":
            frame = _read_libfm(path, data)
        elif fmt == "parquet":
            if compression_of(path):
                raise BadInput(f"{path}: Parquet compresses inside; give the .parquet file as is")
            frame = pl.read_parquet(path)
        else:
            frame, malformed = _read_delimited(path, data, fmt)
    except BadInput:
        raise
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError, UnicodeError) as err:
        raise BadInput(f"{path}: cannot read as {fmt}: {_first_line(err)}") from None
    if frame.height == 0 and malformed.height == 0:
        raise BadInput(f"{path}: file has no rows")
    frame = _with_partition(frame, source)
    if malformed.height == 0:
        return RawFile(frame.with_row_index(ROW, offset=1), malformed)
    bad = set(malformed[ROW].to_list())
    numbers = np.setdiff1d(np.arange(1, frame.height + len(bad) + 1), np.fromiter(bad, np.int64))
    rows = pl.Series(ROW, numbers, dtype=pl.UInt32)
    return RawFile(frame.insert_column(0, rows), malformed)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _with_partition(frame: pl.DataFrame, source: InputFile) -> pl.DataFrame:
    """Partition folders as string columns; a column the file has itself wins."""
    added = [
        pl.lit(value, dtype=pl.String).alias(key)
        for key, value in source.partition
        if key not in frame.columns
    ]
    return frame.with_columns(added) if added else frame


def _codec(encoding: str) -> str:
    """pyarrow's name for an encoding: 'utf8' reads without transcoding."""
    name = codecs.lookup(encoding).name
    return "utf8" if name == "utf-8" else name


def _header(path: Path, data: DataSpec, delimiter: str, quoted: bool) -> list[str]:
    """The column names of the first line, decoded and split as the rows will be."""
    chunks = []
    with pa.input_stream(str(path), compression="detect") as stream:
        while True:
            chunk = stream.read(1 << 16)
            chunks.append(chunk)
            if not chunk or b"\n" in chunk:
                break
    raw = b"".join(chunks).split(b"\n", 1)[0].rstrip(b"\r")
    encoding = "utf-8-sig" if _codec(data.encoding) == "utf8" else data.encoding  # drop a BOM
    try:
        line = raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise BadInput(
            f"{path}: header is not {data.encoding} text ({err.reason}); {_hint()}"
        ) from None
    if not line.strip():
        raise BadInput(f"{path}: file is empty")
    reader = csv.reader([line], delimiter=delimiter, quotechar='"' if quoted else None)
    names = next(reader)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadInput(f"{path}: header names column '{repeated[0]}' more than once")
    return names


def _hint() -> str:
    return 'set data.encoding to the file\'s encoding (e.g. "latin-1" or "cp1252")'


def _read_delimited(path: Path, data: DataSpec, fmt: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """CSV or TSV as strings (empty cells are null); rows whose field count differs from the
    header's are returned apart, numbered, with their reason."""
    delimiter, quoted = ("," if fmt == "csv" else "\t"), fmt == "csv"
    names = list(data.columns) or _header(path, data, delimiter, quoted)
    header_rows = 0 if data.columns else 1
    bad_rows: list[tuple[int | None, int, str]] = []
    lock = threading.Lock()

    def on_bad_row(row) -> str:
        with lock:
            bad_rows.append((row.number, row.actual_columns, row.text))
        return "skip"

    def read(threads: bool) -> pa.Table:
        return pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(
                column_names=names,
                skip_rows=header_rows,
                encoding=_codec(data.encoding),
                use_threads=threads,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if quoted else False,
                newlines_in_values=quoted,
                invalid_row_handler=on_bad_row,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )

    try:
        table = read(threads=True)
        if bad_rows:  # rows are numbered only by a single-threaded read: read again to name them
            bad_rows.clear()
            table = read(threads=False)
    except pa.ArrowInvalid as err:
        message = str(err)
        if "UTF8" in message or "decode" in message.lower():
            column = re.search(r"column #(\d+)", message)
            where = f" in column '{names[int(column.group(1))]}'" if column else ""
            raise BadInput(f"{path}: not valid {data.encoding} text{where}; {_hint()}") from None
        raise
    source = "data.columns" if data.columns else "the header"
    malformed = pl.DataFrame(
        {
            ROW: [number - header_rows for number, _, _ in bad_rows],
            "reason": [
                f"row has {count} field{'s' if count != 1 else ''}, {source} has {len(names)}: "
                f"'{text[:SHOWN_LINE_CHARS]}'"
                for _, count, text in bad_rows
            ],
        },
        schema={ROW: pl.UInt32, "reason": pl.String},
    )
    return pl.from_arrow(table), malformed


def _read_lines(path: Path, data: DataSpec) -> pl.DataFrame:
    """A text file's lines as one string column `line` (decoded, decompressed)."""
    table = pacsv.read_csv(
        str(path),
        read_options=pacsv.ReadOptions(column_names=["line"], encoding=_codec(data.encoding)),
        parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}),
    )
    return pl.from_arrow(table)


def _read_libfm(path: Path, data: DataSpec) -> pl.DataFrame:
    """libfm lines `label idx:val idx:val ...`, one token per field in `data.categorical` order.

    The label (1/-1 or 1/0) goes to the spec's label column; each field keeps its feature index
    as a string value, which the vocabulary then maps like any categorical value.
    """
    fields = data.categorical
    if not fields:
        raise BadInput(f"{path}: libfm needs data.categorical to name the fields in line order")
    lines = _read_lines(path, data)
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
