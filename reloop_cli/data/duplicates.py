"""The same impression twice is one impression.

Exports are rewritten: when late rows arrive, Spark rewrites a day's partition, and the new file
holds the old rows again. Ingest keys files by content, so the rewritten file looks new; with
`data.impression_id`, a row whose id the workspace already holds for its day is a duplicate and
is skipped (counted in the batch's manifest and the command's output), or refused with
`data.duplicate_impressions = "reject"`. A duplicate whose label differs from the held row's is
counted apart: the first label stays, and the change is reported, never kept twice. Logs without
an impression id are keyed by file content and row, so overlapping exports of them are not
recognised (docs/guides/your-logs.md says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from reloop_cli.columns import IMPRESSION_ID, LABEL
from reloop_cli.store.workspace import Workspace


@dataclass
class Duplicates:
    """What one day's part lost to rows held already: how many, and how many of those arrived
    with another label than the one kept."""

    rows: int = 0
    relabelled: int = 0
    example: str | None = None  # one duplicated id, for messages


def held_rows(ws: Workspace, day: str, own_part: str) -> pl.DataFrame:
    """impression_id and label of every row the workspace holds for `day`, but for the part file
    named `own_part` (a rerun of a batch must not find its own rows)."""
    parts = sorted(p for p in ws.log_dir(day).glob("*.parquet") if p.name != own_part)
    if not parts:
        return pl.DataFrame(schema={IMPRESSION_ID: pl.String, LABEL: pl.Int8})
    return pl.scan_parquet(parts).select(IMPRESSION_ID, LABEL).collect()


def drop_held(ws: Workspace, path: Path, held: pl.DataFrame) -> Duplicates:
    """Remove from the staged part at `path` the rows whose impression id `held` has; rewrite it
    only when there were any."""
    if held.height == 0:
        return Duplicates()
    part = pl.read_parquet(path)
    ids = part.select(IMPRESSION_ID, LABEL)
    again = ids.join(held.unique(IMPRESSION_ID, keep="first"), on=IMPRESSION_ID, suffix="_held")
    if again.height == 0:
        return Duplicates()
    relabelled = int((again[LABEL] != again[f"{LABEL}_held"]).sum())
    kept = part.join(
        again.select(IMPRESSION_ID), on=IMPRESSION_ID, how="anti", maintain_order="left"
    )
    ws.write_parquet(kept, path)
    return Duplicates(again.height, relabelled, again[IMPRESSION_ID][0])
