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


# The split method recorded with each version: a change to `stable_buckets` must rename it.
SPLIT_METHOD = "fnv1a64-splitmix64-v1"
GOLDEN = 0x9E3779B97F4A7C15


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: spreads a seed's small changes over every bit (uint64 wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stable_buckets(values: pl.Series, seed: int, buckets: int) -> pl.Series:
    """Each value's bucket in 0..buckets-1 under `seed`: FNV-1a-64 of the value, mixed with the
    seed by SplitMix64. Fixed by its definition, so a split (the validation slice, the gate's
    holdout, the static protocol's 8:1:1) is the same rows in every process and release."""
    # The seed's product wraps modulo 2**64 in Python ints: numpy would warn on the overflow.
    seeded = fnv1a64(values) ^ np.uint64((seed * GOLDEN) % 2**64)
    rows = (_splitmix64(seeded) % np.uint64(buckets)).astype(np.int64)
    return pl.Series(values.name, rows, dtype=pl.Int64)


def bucket_of(column: str, seed: int, buckets: int = 10_000) -> pl.Expr:
    """`stable_buckets` of a column, as an expression (row by row, so it streams)."""
    return pl.col(column).map_batches(
        lambda values: stable_buckets(values, seed, buckets),
        return_dtype=pl.Int64,
        is_elementwise=True,
    )
