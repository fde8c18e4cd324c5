"""How long values stay away before they come back: what an eviction horizon would cost.

`vocabulary.evict_after_days = N` frees the row of a value not seen for N days; when the value
comes back it is admitted fresh (a new vector) and, until a version trains on it, it is scored
with the out-of-vocabulary row. How many rows that touches depends on the logs alone: the rows
of a day whose value was last seen more than N days before. This module measures it from the
ingested logs, so a user can pick a horizon longer than the usual gap between a value's visits
without first paying for a short one in next-day AUC (docs/BENCHMARKS.md section 5 reads it on
60 simulated nights beside the AUC of each horizon).

For each categorical field and a day D, each of D's rows falls in one of:
- returning: its value was seen in the `lookback_days` before D; its gap is D minus the last of
  those days (1 = seen the day before);
- new: its value was not seen in the lookback (new to the logs, or away longer than it).
Under a horizon N, the returning rows with gap > N find their value evicted (the vocabulary
update before D's version ran on day D-1 and dropped every value last seen N or more days
before it). Rows, not values, are counted (for a multivalued field, its tags): a frequent value
that returns weighs as often as it is looked up, which is what the model's AUC feels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

import polars as pl

from reloop_cli.errors import BadInput
from reloop_cli.features.vocabulary import value_counts
from reloop_cli.spec.layout import categorical_fields
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace

DEFAULT_HORIZONS = (7, 14, 28, 56)
DEFAULT_LOOKBACK_DAYS = 90
GAP_QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class FieldRevisits:
    """One field on one day: its rows by how long their value had been away."""

    rows: int
    new_rows: int  # value not seen in the lookback
    returning_rows: int
    gap_quantiles: dict[str, float | None]  # over the returning rows, in days
    # horizon N -> share of the day's rows whose value would have been evicted under N
    evicted_share: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        entry = asdict(self)
        entry["evicted_share"] = {str(n): share for n, share in self.evicted_share.items()}
        return entry


@dataclass
class RevisitReport:
    """Every categorical field's revisits on `day`, looking back over `history_days` days."""

    day: str
    history_days: list[str]
    horizons: list[int]
    fields: dict[str, FieldRevisits]
    hashed: list[str]  # fields with hash_buckets: nothing is evicted there

    def to_dict(self) -> dict:
        return {
            "day": self.day,
            "history": [self.history_days[0], self.history_days[-1]] if self.history_days else [],
            "horizons": self.horizons,
            "fields": {name: entry.to_dict() for name, entry in self.fields.items()},
            "hashed": self.hashed,
        }


def _history(days: list[str], day: str, lookback_days: int) -> list[str]:
    """The ingested `days` in the `lookback_days` before `day`."""
    first = (date.fromisoformat(day) - timedelta(days=lookback_days)).isoformat()
    return [d for d in days if first <= d < day]


def _field_revisits(
    ws: Workspace, spec: Spec, name: str, day: str, history: list[str], horizons: list[int]
) -> FieldRevisits:
    today = value_counts(spec, name, ws.scan_logs([day])).select("value", rows="seen")
    if history:
        last_seen = value_counts(spec, name, ws.scan_logs(history))
        today = today.join(last_seen.select("value", last_day="seen_day"), on="value", how="left")
    else:
        today = today.with_columns(last_day=pl.lit(None, dtype=pl.String))
    gaps = today.select(
        "rows",
        gap=(pl.lit(date.fromisoformat(day)) - pl.col("last_day").str.to_date()).dt.total_days(),
    )
    rows = int(gaps["rows"].sum())
    returning = gaps.filter(pl.col("gap").is_not_null()).sort("gap")
    returning_rows = int(returning["rows"].sum())
    return FieldRevisits(
        rows=rows,
        new_rows=rows - returning_rows,
        returning_rows=returning_rows,
        gap_quantiles={
            f"p{round(q * 100)}": _row_quantile(returning, q, returning_rows) for q in GAP_QUANTILES
        },
        evicted_share={
            n: int(returning.filter(pl.col("gap") > n)["rows"].sum()) / max(rows, 1)
            for n in horizons
        },
    )


def _row_quantile(returning: pl.DataFrame, q: float, total: int) -> float | None:
    """The gap below which a share `q` of the returning rows lie (values sorted by gap, each
    weighing its rows)."""
    if total == 0:
        return None
    covered = returning["rows"].cum_sum()
    position = int((covered >= q * total).arg_max())
    return float(returning["gap"][position])


def revisits(
    ws: Workspace,
    spec: Spec,
    day: str | None = None,
    horizons: list[int] | tuple[int, ...] = DEFAULT_HORIZONS,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> RevisitReport:
    """Per categorical field, how the rows of `day` (default: the newest) split by their value's
    time away, and what share each eviction horizon would evict."""
    days = ws.days()
    if not days:
        raise BadInput(f"{ws.root}: nothing ingested yet; run `reloop ingest` first")
    day = ws.require_day(day) if day is not None else days[-1]
    horizons = sorted({int(n) for n in horizons})
    if not horizons or horizons[0] < 1:
        raise BadInput(f"horizons {horizons}: give whole days, 1 or more")
    if lookback_days <= horizons[-1]:
        raise BadInput(
            f"lookback_days {lookback_days}: must be longer than the longest horizon "
            f"({horizons[-1]} days) to tell a gap over it from a value never seen"
        )
    history = _history(days, day, lookback_days)
    fields, hashed = {}, []
    for name in categorical_fields(spec):
        if spec.vocabulary.policy(name, spec.train.min_count).hash_buckets:
            hashed.append(name)
            continue
        fields[name] = _field_revisits(ws, spec, name, day, history, horizons)
    return RevisitReport(day, history, horizons, fields, hashed)
