"""The string each raw value is looked up by, shared by the vocabulary (which counts and assigns
them) and the encoder (which maps them to rows): two readings of one value would split its row.

Row `OOV_INDEX` (0) of every field is the out-of-vocabulary row; a missing value reads as
`NULL_TOKEN`, so "no value" is a value with a row of its own.
"""

from __future__ import annotations

import polars as pl

from reloop_cli.spec.pipeline import Spec

OOV_INDEX = 0
NULL_TOKEN = "<null>"


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
