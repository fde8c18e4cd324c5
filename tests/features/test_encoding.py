"""Vocabulary: rows never move as it grows, and unseen values fall to the OOV row."""

from __future__ import annotations

import polars as pl

from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import encode
from reloop_cli.features.tokens import OOV_INDEX
from reloop_cli.spec.pipeline import spec_from_dict

SPEC = spec_from_dict({"data": {"categorical": ["site"], "numeric": ["n"]}}, "t.toml")


def rows(*sites: str) -> pl.LazyFrame:
    return pl.LazyFrame({"site": list(sites), "n": [1.0] * len(sites), "label": [0] * len(sites)})


def index_of(frame: pl.DataFrame) -> list[int]:
    return frame["site"].to_list()


def grow(ws, spec, frame):
    refreshed = vocabulary.refresh(ws, spec, frame, None)
    return refreshed.view, refreshed.sizes


def test_known_values_keep_their_rows_when_the_vocabulary_grows(ws):
    first, first_sizes = grow(ws, SPEC, rows("b", "a"))
    before = index_of(encode(rows("a", "b"), SPEC, first, first_sizes).collect())
    second, second_sizes = grow(ws, SPEC, rows("0", "c", "a"))  # "0" sorts first: still appended
    after = index_of(encode(rows("a", "b"), SPEC, second, second_sizes).collect())
    assert before == after
    assert OOV_INDEX not in after
    assert vocabulary.load(ws).height == 4


def test_unseen_values_and_values_newer_than_the_model_map_to_oov(ws):
    _, old_sizes = grow(ws, SPEC, rows("a", "b"))
    vocab, _ = grow(ws, SPEC, rows("c"))
    encoded = encode(rows("a", "c", "never"), SPEC, vocab, old_sizes).collect()
    assert index_of(encoded)[1:] == [OOV_INDEX, OOV_INDEX]
    assert index_of(encoded)[0] != OOV_INDEX


def test_min_count_keeps_rare_values_out(ws):
    spec = SPEC.override("train", min_count=2)
    vocab, _ = grow(ws, spec, rows("a", "a", "b"))
    assert vocab["value"].to_list() == ["a"]


def test_dense_values_are_log_scaled_and_nulls_are_zero(ws):
    vocab, sizes = grow(ws, SPEC, rows("a"))
    frame = pl.LazyFrame({"site": ["a", "a"], "n": [None, -3.0], "label": [0, 1]})
    encoded = encode(frame, SPEC, vocab, sizes).collect()
    assert encoded["n"][0] == 0.0
    assert abs(encoded["n"][1] + 1.3862944) < 1e-6  # -log1p(3)
