"""The rows `reloop serve` logs for what it showed: the request's fields as ingest reads them, and
the server's own columns (which version served, its pCTR, the slot, the propensity, and the
experiment arm that chose the version)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from reloop_cli.spec.pipeline import Spec

# The server's own columns in the impression log, beside the spec's fields (a field may not
# take one of these names: `reloop serve` refuses such a spec).
SERVER_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String,
    "served_version": pl.Int64,
    "served_pctr": pl.Float64,
    "adapted_pctr": pl.Float64,
    "slot": pl.Int64,
    "propensity": pl.Float64,
    # A running experiment (serving/arms.py): its id, the arm and stage that served the row,
    # the randomisation unit, and in shadow mode the candidate's unshown pCTR.
    "experiment_id": pl.String,
    "experiment_arm": pl.String,
    "experiment_stage": pl.Int64,
    "experiment_unit": pl.String,
    "shadow_pctr": pl.Float64,
}


@dataclass(frozen=True)
class Assignment:
    """The experiment a request took part in, if any: its id, stage, arm and unit."""

    experiment: str | None = None
    stage: int | None = None
    arm: str | None = None
    unit: str | None = None


NO_EXPERIMENT = Assignment()


def impression_types(spec: Spec) -> dict[str, pl.DataType]:
    """The impression log's column types: the server's own columns, and each field as ingest
    reads it (a categorical as text, a numeric as a float, tags as a list of text)."""
    data = spec.data
    return {
        **SERVER_COLUMNS,
        **{name: pl.String for name in data.categorical},
        **{name: pl.Float64 for name in data.numeric},
        **{name: pl.List(pl.String) for name in data.multivalued},
    }


def shown_rows(
    spec: Spec,
    *,
    version: int | None,
    request_id: str,
    now: float,
    ids: list[str],
    pctr: np.ndarray | None,
    adapted: np.ndarray | None,
    logged: dict[str, list],
    slate: tuple[np.ndarray, np.ndarray] | None,
    assignment: Assignment = NO_EXPERIMENT,
    shadow: np.ndarray | None = None,
) -> list[dict]:
    """The shown impressions (every candidate when no slots were asked), as trained on:
    `served_pctr` is the serving version's own prediction (tomorrow's ỹ_last), `adapted_pctr`
    what the adapter made of it and the request was answered with (null when off)."""
    position = spec.serving.position_field
    picks = (
        [(int(c), slot, float(p)) for slot, (c, p) in enumerate(zip(*slate, strict=True), 1)]
        if slate is not None
        else [(c, None, None) for c in range(len(ids))]
    )
    rows = []
    for candidate, slot, propensity in picks:
        row = {name: values[candidate] for name, values in logged.items()}
        if position and slot is not None:
            row[position] = str(slot) if isinstance(row.get(position), str) else slot
        row.update(
            impression_id=ids[candidate],
            request_id=request_id,
            ts=now,
            served_version=version,
            served_pctr=float(pctr[candidate]) if pctr is not None else None,
            adapted_pctr=float(adapted[candidate]) if adapted is not None else None,
            slot=slot,
            propensity=propensity,
            experiment_id=assignment.experiment,
            experiment_arm=assignment.arm,
            experiment_stage=assignment.stage,
            experiment_unit=assignment.unit,
            shadow_pctr=float(shadow[candidate]) if shadow is not None else None,
        )
        rows.append(row)
    return rows
