"""A hash fixed by its definition (FNV-1a, 64-bit, of a value's UTF-8 bytes): a value hashes the
same in every process, machine and library release, which Polars' own `Expr.hash` does not
promise. Hashed fields (`vocabulary.hash_buckets`) pick their rows with it.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from reloop_cli.features.tokens import NULL_TOKEN

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a64(values: pl.Series) -> np.ndarray:
    """FNV-1a, 64-bit, of each value's UTF-8 bytes: a hash fixed by its definition, so a value
    hashes the same in every process, machine and library release (Polars' own `hash` is not
    stable across releases)."""
    binary = pc.cast(values.cast(pl.String).fill_null(NULL_TOKEN).to_arrow(), pa.large_binary())
    if isinstance(binary, pa.ChunkedArray):
        binary = binary.combine_chunks()
    offsets = np.frombuffer(binary.buffers()[1], np.int64)[
        binary.offset : binary.offset + len(binary) + 1
    ]
    data = binary.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(binary), FNV_OFFSET, np.uint64)
    for position in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > position)
        mixed = hashes[active] ^ data[starts[active] + position].astype(np.uint64)
        hashes[active] = mixed * FNV_PRIME  # uint64 arithmetic wraps, as FNV needs
    return hashes


def hashed_rows(values: pl.Series, buckets: int) -> pl.Series:
    """Rows 1..buckets of a hashed field (0 stays the out-of-vocabulary row)."""
    rows = (fnv1a64(values) % np.uint64(buckets)).astype(np.int64) + 1
    return pl.Series(values.name, rows, dtype=pl.Int32)
