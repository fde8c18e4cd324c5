"""The vocabulary's life cycle: raw values -> embedding rows, bounded over months of nights.

`features/vocab.parquet` (scope `main`: the cron cycle's and hand-trained chains') holds one row
per assignment of a value to an embedding row (each simulated loop keeps its own scope,
`features/vocab-<scope>.parquet`, so a repeat starts from what its own days taught it):

    field, value, index, since, until, count, last_day

A value holds row `index` of its field from generation `since` until generation `until` (null:
still). An update that changes any assignment opens a new generation; each version records the
generation it trained at and encodes with the assignments valid then (`at`), so a row handed to a
new value never changes what an older version means by it, and a warm start copies exactly the
rows whose value stayed (`kept_rows`). Nothing is rewritten: assignments are only opened and
closed, and closed ones are dropped once no live version can need them.

One update per training window (`refresh`), per field:
1. count each value over the window, and the last day it was seen;
2. evict values not seen for `evict_after_days` days (their rows are freed);
3. admit values seen at least `min_count` times in the window;
4. keep at most `max_rows` values, the most frequent in the window (live values win ties);
5. give new values (in sorted order) the freed rows first, lowest first, then rows at the end.
An update is idempotent: run again on the same window it changes nothing. A field with
`hash_buckets = N` keeps no vocabulary: its value's row is 1 + FNV-1a-64(value) mod N, the same
in every process, version and library release. Row 0 of every field is the out-of-vocabulary row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl

from reloop_cli.columns import DAY, MAIN_CHAIN
from reloop_cli.features.tokens import OOV_INDEX, token
from reloop_cli.runtime.faults import crash_point
from reloop_cli.spec.layout import categorical_fields
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.sections import FieldPolicy
from reloop_cli.store.workspace import Workspace

SCHEMA = {
    "field": pl.String,
    "value": pl.String,
    "index": pl.Int32,
    "since": pl.Int32,
    "until": pl.Int32,
    "count": pl.Int64,
    "last_day": pl.String,
}
VIEW_SCHEMA = {"field": pl.String, "value": pl.String, "index": pl.Int32}


MAIN_SCOPE = MAIN_CHAIN  # the vocabulary of the cron cycle's (and hand-trained) chain


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def load(ws: Workspace, scope: str = MAIN_SCOPE) -> pl.DataFrame:
    """A scope's vocabulary; one written by reloop 0.1 (field, value, index) reads as
    generation 0 with nothing closed."""
    target = ws.vocab_path(scope)
    if not target.exists():
        return empty()
    vocab = pl.read_parquet(target)
    missing = [pl.lit(None, dtype=dtype).alias(name) for name, dtype in SCHEMA.items()]
    vocab = vocab.with_columns([m for m in missing if m.meta.output_name() not in vocab.columns])
    return vocab.with_columns(pl.col("since").fill_null(0)).select(
        [pl.col(name).cast(dtype) for name, dtype in SCHEMA.items()]
    )


def generation(vocab: pl.DataFrame) -> int:
    """The newest generation: the last one whose update changed an assignment."""
    if vocab.height == 0:
        return 0
    return int(max(vocab["since"].max() or 0, vocab["until"].max() or 0))


def at(vocab: pl.DataFrame, generation_: int | None) -> pl.DataFrame:
    """field, value, index as they were at a generation (None: now)."""
    if generation_ is None:
        valid = pl.col("until").is_null()
    else:
        valid = (pl.col("since") <= generation_) & (
            pl.col("until").is_null() | (pl.col("until") > generation_)
        )
    return vocab.filter(valid).select(list(VIEW_SCHEMA))


def _policies(spec: Spec) -> dict[str, FieldPolicy]:
    return {
        name: spec.vocabulary.policy(name, spec.train.min_count)
        for name in categorical_fields(spec)
    }


def sizes(spec: Spec, view: pl.DataFrame) -> list[int]:
    """Embedding rows per categorical field: a hashed field's buckets + 1, else the largest
    row in use + 1 (row 0 is the out-of-vocabulary row)."""
    top = dict(view.group_by("field").agg(pl.col("index").max()).iter_rows())
    return [
        policy.hash_buckets + 1 if policy.hash_buckets else int(top.get(name) or OOV_INDEX) + 1
        for name, policy in _policies(spec).items()
    ]


def value_counts(spec: Spec, name: str, rows: pl.LazyFrame) -> pl.DataFrame:
    """One field's values with `seen`, their lookups (rows; tags for a multivalued field), and
    `seen_day`, the last day seen (when the rows carry a `day`)."""
    has_day = DAY in rows.collect_schema().names()
    if name in spec.data.multivalued:
        values = rows.select(pl.col(name).alias("value"), *([DAY] if has_day else []))
        values = values.explode("value")
    else:
        values = rows.select(token(spec, name).alias("value"), *([DAY] if has_day else []))
    last = pl.col(DAY).max() if has_day else pl.lit(None, dtype=pl.String)
    return (
        values.drop_nulls("value")
        .group_by("value")
        .agg(pl.len().cast(pl.Int64).alias("seen"), last.alias("seen_day"))
        .collect()
    )


@dataclass
class FieldReport:
    """What one update did to a field: rows live after it, admitted and evicted by it."""

    live: int = 0
    admitted: int = 0
    evicted: int = 0
    hashed: int = 0  # buckets, for a hashed field

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v or k == "live"}


@dataclass
class Refreshed:
    """The vocabulary after a window's update: the full table, its generation, the view at it,
    the embedding sizes, what changed per field, and the scope it belongs to."""

    vocab: pl.DataFrame
    generation: int
    view: pl.DataFrame
    sizes: list[int]
    fields: dict[str, FieldReport] = field(default_factory=dict)
    scope: str = MAIN_SCOPE

    def report(self) -> dict:
        return {
            "generation": self.generation,
            "fields": {name: r.to_dict() for name, r in self.fields.items()},
        }


def update(
    vocab: pl.DataFrame, spec: Spec, rows: pl.LazyFrame, day: str | None, keep_from: int | None
) -> tuple[pl.DataFrame, dict[str, FieldReport]]:
    """The vocabulary after one window (a pure function of its inputs); see the module's
    docstring for the rules. `keep_from`: the oldest generation a live version uses (closed
    assignments older than that are dropped)."""
    new_generation = generation(vocab) + 1
    parts, reports = {}, {}
    # One pass splits the table by field; the result is sorted field by field (each part on its
    # integer keys) and laid out in field order: the order one sort by (field, index, since) of
    # the whole table gives, without sorting 7.8M rows on a text key (most of a nightly update
    # at that size, docs/BENCHMARKS.md).
    by_field = _by_field(vocab)
    for name, policy in _policies(spec).items():
        if policy.hash_buckets:
            reports[name] = FieldReport(live=policy.hash_buckets, hashed=policy.hash_buckets)
            continue
        mine = by_field.get((name,), empty())
        counts = value_counts(spec, name, rows)
        part = _update_field(mine, counts, policy, day, new_generation, name, reports)
        parts[name] = part.sort("index", "since")
    # Nothing opened or closed: the assignments and so the generation stay (counts and last
    # days are refreshed all the same); that is what makes an update idempotent.
    ordered = [parts[name] for name in sorted(parts)]
    result = pl.concat(ordered, how="vertical") if ordered else empty()
    if keep_from is not None:
        result = result.filter(pl.col("until").is_null() | (pl.col("until") > keep_from))
    return result, reports


def _by_field(vocab: pl.DataFrame) -> dict[tuple[str], pl.DataFrame]:
    """The table's rows per field. A saved table is sorted by field, so each field is one run
    of rows, sliced without copying; any other order is partitioned."""
    if vocab.height == 0:
        return {}
    fields = vocab.get_column("field")
    if not fields.is_sorted():
        return vocab.partition_by("field", as_dict=True)
    runs = fields.rle()
    starts = np.concatenate([[0], np.cumsum(runs.struct.field("len").to_numpy())[:-1]])
    return {
        (name,): vocab.slice(int(start), int(length))
        for name, start, length in zip(
            runs.struct.field("value"), starts, runs.struct.field("len"), strict=True
        )
    }


def _update_field(
    mine: pl.DataFrame,
    counts: pl.DataFrame,
    policy: FieldPolicy,
    day: str | None,
    new_generation: int,
    name: str,
    reports: dict[str, FieldReport],
) -> pl.DataFrame:
    closed = mine.filter(pl.col("until").is_not_null())
    live = mine.filter(pl.col("until").is_null()).join(counts, on="value", how="left")
    live = live.with_columns(
        pl.col("seen").fill_null(0).alias("count"),
        pl.max_horizontal(pl.col("last_day"), pl.col("seen_day")).alias("last_day"),
    ).drop("seen", "seen_day")
    if day is not None:
        live = live.with_columns(pl.col("last_day").fill_null(day))
    stale = pl.lit(False)
    if policy.evict_after_days and day is not None:
        cutoff = (date.fromisoformat(day) - timedelta(days=policy.evict_after_days)).isoformat()
        stale = pl.col("last_day") <= cutoff
    candidates = (
        counts.join(live.select("value"), on="value", how="anti")
        .filter(pl.col("seen") >= policy.min_count)
        .select(
            pl.col("value"), pl.col("seen").alias("count"), pl.col("seen_day").alias("last_day")
        )
    )
    if day is not None:
        candidates = candidates.with_columns(pl.col("last_day").fill_null(day))
    if policy.max_rows:  # only a capacity needs the ranking (millions of values to sort)
        pool = pl.concat(
            [
                live.filter(~stale).select(
                    "value", "count", "last_day", pl.lit(True).alias("live")
                ),
                candidates.with_columns(pl.lit(False).alias("live")),
            ],
            how="vertical",
        )
        pool = pool.sort(["count", "live", "value"], descending=[True, True, False])
        pool = pool.head(policy.max_rows)
        kept = pool.filter(pl.col("live")).select("value")
        admitted = pool.filter(~pl.col("live")).drop("live").sort("value")
        evicted = live.join(kept, on="value", how="anti", maintain_order="left")
        staying = live.join(kept, on="value", how="semi", maintain_order="left")
    else:  # every fresh value stays, every stale one goes: no ranking, no join
        admitted = candidates.sort("value")
        evicted, staying = live.filter(stale), live.filter(~stale)
    rows_free = _free_rows(mine, staying["index"], admitted.height)
    opened = admitted.select(
        pl.lit(name).alias("field"),
        pl.col("value"),
        pl.Series("index", rows_free, dtype=pl.Int32),
        pl.lit(new_generation, dtype=pl.Int32).alias("since"),
        pl.lit(None, dtype=pl.Int32).alias("until"),
        pl.col("count").cast(pl.Int64),
        pl.col("last_day").cast(pl.String),
    )
    closing = evicted.with_columns(pl.lit(new_generation, dtype=pl.Int32).alias("until"))
    result = pl.concat(
        [
            closed,
            staying.select(list(SCHEMA)),
            closing.select(list(SCHEMA)),
            opened.select(list(SCHEMA)),
        ],
        how="vertical",
    )
    reports[name] = FieldReport(
        live=staying.height + opened.height, admitted=opened.height, evicted=evicted.height
    )
    return result


def _free_rows(mine: pl.DataFrame, in_use: pl.Series, wanted: int) -> np.ndarray:
    """Rows for `wanted` new values: rows no live value holds (freed by eviction), lowest
    first, then new rows after the largest ever used."""
    if wanted == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(mine["index"].max() or OOV_INDEX)
    # A mask over the rows, not a set difference: np.setdiff1d sorts both sides, which took
    # 2 s a field at 5M rows (most of a nightly update at the scale of docs/BENCHMARKS.md).
    free = np.ones(top + 1, dtype=bool)
    free[OOV_INDEX] = False
    free[in_use.to_numpy()] = False
    holes = np.flatnonzero(free)
    fresh = np.arange(top + 1, top + 1 + max(0, wanted - holes.size))
    return np.concatenate([holes, fresh])[:wanted]


def refresh(
    ws: Workspace,
    spec: Spec,
    rows: pl.LazyFrame,
    day: str | None,
    *,
    scope: str = MAIN_SCOPE,
    keep_from: int | None = None,
    save: bool = True,
) -> Refreshed:
    """Update a scope's vocabulary with a window's rows and save it (atomically; with
    `save=False`, as every rank but the first does under torchrun, only compute it)."""
    before = load(ws, scope)
    after, reports = update(before, spec, rows, day, keep_from)
    # A saved table is in update's order, so an unchanged one compares equal as it stands (one
    # written by an older release in another order is written again, once).
    if save and not after.equals(before):
        crash_point("vocab")  # computed, not yet written: the old vocabulary must stay
        ws.write_parquet(after, ws.vocab_path(scope))
    now = generation(after)
    view = at(after, now)
    return Refreshed(after, now, view, sizes(spec, view), reports, scope)


def for_version(
    ws: Workspace, meta: dict, loaded: dict[str, pl.DataFrame] | None = None
) -> pl.DataFrame:
    """The view a version encodes with: its scope's assignments at its generation (a version
    from reloop 0.1 has neither: the main scope, everything). `loaded`: scope -> a vocabulary
    already in memory (training has just refreshed its own), read instead of the file."""
    scope = meta.get("vocab_scope", MAIN_SCOPE)
    vocab = loaded[scope] if loaded and scope in loaded else load(ws, scope)
    return at(vocab, meta.get("vocab_generation"))


def build(spec: Spec, rows: pl.LazyFrame) -> tuple[pl.DataFrame, list[int]]:
    """A fresh vocabulary (view, sizes) from rows alone, for the static protocols (`reproduce`
    and the FuxiCTR benchmark) that have no workspace history."""
    vocab, _ = update(empty(), spec, rows, None, None)
    view = at(vocab, None)
    return view, sizes(spec, view)


def kept_rows(
    spec: Spec,
    parent_view: pl.DataFrame,
    child_view: pl.DataFrame,
    parent_sizes: list[int],
    child_sizes: list[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per categorical field, (parent rows, child rows) that hold the same value in both, and
    so carry the parent's vector over, the out-of-vocabulary row 0 included; a hashed field
    with the same buckets keeps every row."""
    pairs = []
    oov = np.array([OOV_INDEX])
    for position, (name, policy) in enumerate(_policies(spec).items()):
        old, new = parent_sizes[position], child_sizes[position]
        if policy.hash_buckets:
            rows = np.arange(0, old) if old == new else oov
            pairs.append((rows, rows))
            continue
        same = (
            parent_view.filter(pl.col("field") == name)
            .join(child_view.filter(pl.col("field") == name), on="value", suffix="_child")
            .filter((pl.col("index") < old) & (pl.col("index_child") < new))
        )
        parent_rows = np.concatenate([oov, same["index"].to_numpy().astype(np.int64)])
        child_rows = np.concatenate([oov, same["index_child"].to_numpy().astype(np.int64)])
        pairs.append((parent_rows, child_rows))
    return pairs
