"""Field bias: a decayed residual per value of chosen fields (the item, say), the second thing a
practitioner tries: an item that trends today clicks more than yesterday's model thinks.

For each value v of each field, decayed sums of the labels and of the base predictions of its
labelled impressions; a prediction's logit moves by log((Σy + m) / (Σp + m)) per field, where m
(`prior_clicks`) shrinks a value seen a few times towards no correction. The sums decay by half
every `half_life` observed batches (slots, in a replay), so the correction follows the day.
Memory is bounded: past `max_values` entries per field the lightest (least recent weight) go.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from reloop_cli.adapt.base import Adapter, Rows, logit, require_labels, sigmoid

ENTRY_BYTES = 3 * 8  # a value's two sums and its key's slot, as counted by memory_bytes


class FieldBias(Adapter):
    name = "field_bias"

    def __init__(
        self,
        fields: tuple[str, ...],
        half_life: float = 4.0,
        prior_clicks: float = 5.0,
        max_values: int = 200_000,
    ) -> None:
        self.fields, self.half_life = tuple(fields), half_life
        self.prior_clicks, self.max_values = prior_clicks, max_values
        self.sums: dict[str, pl.DataFrame] = {}
        self.reset()

    def reset(self) -> None:
        schema = {"value": pl.String, "clicks": pl.Float64, "expected": pl.Float64}
        self.sums = {name: pl.DataFrame(schema=schema) for name in self.fields}

    def predict(self, rows: Rows) -> np.ndarray:
        if all(table.is_empty() for table in self.sums.values()):  # nothing learned yet
            return np.asarray(rows.pctr, dtype=np.float64).copy()
        shifted = logit(rows.pctr)
        for name in self.fields:
            shifted = shifted + self._offsets(name, rows.values[name])
        return sigmoid(shifted)

    def _offsets(self, name: str, values: np.ndarray) -> np.ndarray:
        table = self.sums[name]
        if table.is_empty():
            return np.zeros(len(values))
        query = pl.DataFrame({"value": pl.Series(values, dtype=pl.String)})
        joined = query.join(table, on="value", how="left", maintain_order="left").fill_null(0.0)
        m = self.prior_clicks
        return np.log((joined["clicks"].to_numpy() + m) / (joined["expected"].to_numpy() + m))

    def observe(self, rows: Rows) -> None:
        labels = require_labels(rows, self.name)
        keep = 0.5 ** (1.0 / self.half_life)
        for name in self.fields:
            batch = (
                pl.DataFrame(
                    {
                        "value": pl.Series(rows.values[name], dtype=pl.String),
                        "clicks": labels,
                        "expected": np.asarray(rows.pctr, dtype=np.float64),
                    }
                )
                .group_by("value")
                .agg(pl.col("clicks").sum(), pl.col("expected").sum())
            )
            decayed = self.sums[name].with_columns(pl.col("clicks", "expected") * keep)
            merged = (
                pl.concat([decayed, batch])
                .group_by("value")
                .agg(pl.col("clicks").sum(), pl.col("expected").sum())
            )
            if merged.height > self.max_values:
                merged = merged.sort("expected", descending=True).head(self.max_values)
            self.sums[name] = merged.sort("value")  # a stable order: replays repeat bit for bit

    def memory_bytes(self) -> int:
        return sum(
            table.height * ENTRY_BYTES + int(table["value"].str.len_bytes().sum() or 0)
            for table in self.sums.values()
        )
