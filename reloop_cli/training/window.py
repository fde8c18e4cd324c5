"""The rows a version trains on: the window of days ending at its day, each row with its parent's
prediction ỹ_last beside it.

One lazy Polars query per day: the day's logs, with ỹ_last either read from the logs (the served
pCTR, `last_source = "served"`), from the scores of the version that served the day, or from the
parent re-scoring the window (`"parent"`). A left join onto unique ids keeps every row exactly
once; rows with no prediction get null and fall back to BCE in the loss.
"""

from __future__ import annotations

import polars as pl

from reloop_cli.columns import IMPRESSION_ID, MAIN_CHAIN, PCTR, SERVED_PCTR, Y_LAST
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version
from reloop_cli.versions.score import score_day


def window_for(ws: Workspace, day: str, window_days: int) -> list[str]:
    """The last `window_days` ingested days up to and including `day`."""
    ws.require_day(day)
    earlier = [d for d in ws.days() if d <= day]
    return earlier[-window_days:]


def served_predictions(
    ws: Workspace, registry: Registry, chain: str, window: list[str]
) -> dict[str, pl.LazyFrame]:
    """ỹ_last as serving saw it, per day: the scores of the version that served that day in this
    chain (days nobody served are left out)."""
    return {
        day: ws.scan_scores(version, day)
        for day in window
        if (version := registry.served_by(chain, day)) is not None and ws.has_scores(version, day)
    }


def parent_predictions(
    ws: Workspace, registry: Registry, spec: Spec, parent: int, window: list[str], chain: str
) -> dict[str, pl.LazyFrame]:
    """ỹ_last per day: the parent re-scoring the window (`last_source = "parent"`), or what
    serving predicted when each day was live (`"served"`)."""
    if spec.train.last_source == "served":
        return served_predictions(ws, registry, chain, window)
    loaded = load_version(ws, parent)
    for day in window:
        score_day(ws, parent, day, loaded=loaded)
    return {day: ws.scan_scores(parent, day) for day in window}


def attach_last(rows: pl.LazyFrame, scores: pl.LazyFrame | None) -> pl.LazyFrame:
    """One day's rows with ỹ_last beside them (null where the scores have no row).

    Scores are written in the order of the day's logs, so the ids usually line up row for row:
    then ỹ_last is placed beside the rows as it is, after checking every id (3.9-4.8x the hash
    join's rows/s on a 10M-row window, docs/BENCHMARKS.md). Otherwise (logs added to the day after
    scoring, scores from elsewhere) a left join on the impression id, first score per id."""
    if scores is None:
        return rows.with_columns(pl.lit(None, dtype=pl.Float32).alias(Y_LAST))
    last = scores.select(IMPRESSION_ID, pl.col(PCTR).cast(pl.Float32).alias(Y_LAST)).collect()
    ids = rows.select(IMPRESSION_ID).collect().to_series()
    if ids.len() == last.height and ids.equals(last[IMPRESSION_ID]):
        return pl.concat([rows, last.lazy().select(Y_LAST)], how="horizontal")
    last = last.unique(IMPRESSION_ID, keep="first", maintain_order=True)
    return rows.join(last.lazy(), on=IMPRESSION_ID, how="left", maintain_order="left")


def training_rows(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    window: list[str],
    parent: int | None,
    loss: str,
    chain: str = MAIN_CHAIN,
) -> pl.LazyFrame:
    """The window's rows, with ỹ_last joined in when the loss reads it (null where missing)."""
    rows = ws.scan_logs(window)
    if parent is None or loss == "bce":
        return rows
    served_column = SERVED_PCTR in rows.collect_schema().names()
    if spec.train.last_source == "served" and served_column:  # the logs carry it: no join
        return rows.with_columns(pl.col(SERVED_PCTR).cast(pl.Float32).alias(Y_LAST))
    scores = parent_predictions(ws, registry, spec, parent, window, chain)
    days = [attach_last(ws.scan_logs([day]), scores.get(day)) for day in window]
    return pl.concat(days, how="diagonal_relaxed")
