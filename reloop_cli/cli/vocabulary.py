"""`reloop revisits`: how long values stay away, to choose `vocabulary.evict_after_days`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reloop_cli.cli.common import (
    JsonOpt,
    SpecOpt,
    WorkspaceOpt,
    app,
    emit_json,
    out,
    run_stage,
)
from reloop_cli.features.revisits import DEFAULT_HORIZONS, DEFAULT_LOOKBACK_DAYS
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "In production"


@app.command("revisits", rich_help_panel=PANEL)
def revisits_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    spec_path: SpecOpt = None,
    day: Annotated[
        str | None, typer.Option("--day", "-d", help="Day to look at (default: the newest).")
    ] = None,
    horizons: Annotated[
        str, typer.Option(help="Eviction horizons to price, in days, comma-separated.")
    ] = ",".join(map(str, DEFAULT_HORIZONS)),
    lookback: Annotated[
        int, typer.Option(help="Days of history to look for a value in.")
    ] = DEFAULT_LOOKBACK_DAYS,
    as_json: JsonOpt = False,
) -> None:
    """Per field, the share of a day's rows each eviction horizon would evict.

    A row counts for horizon N when its value was away more than N days: under
    `vocabulary.evict_after_days = N` it is scored with the out-of-vocabulary row, and the value
    then learns again from a fresh vector.

    Example: reloop revisits -w /srv/reloop --horizons 14,28,56
    """
    from reloop_cli.errors import BadInput
    from reloop_cli.features.revisits import revisits
    from reloop_cli.store.stored_spec import spec_for

    ws = Workspace(workspace)

    def action():
        try:
            chosen = [int(n) for n in horizons.split(",") if n.strip()]
        except ValueError:
            raise BadInput(f"--horizons {horizons!r}: give whole days, e.g. 14,28") from None
        return revisits(ws, spec_for(ws, spec_path), day, chosen, lookback)

    report = run_stage(action)
    if as_json:
        emit_json(report.to_dict())
        return
    history = report.to_dict()["history"]
    since = f"{history[0]}..{history[1]}" if history else "no earlier day"
    table = Table(
        "field",
        "rows",
        "new",
        "days away p50/90/99",
        *(f"> {n} d" for n in report.horizons),
        title=f"{report.day}: rows by their value's days away (history {since})",
    )
    for name, entry in report.fields.items():
        quantiles = "/".join("-" if v is None else f"{v:g}" for v in entry.gap_quantiles.values())
        table.add_row(
            name,
            f"{entry.rows:,}",
            f"{entry.new_rows / max(entry.rows, 1):.1%}",
            quantiles,
            *(f"{entry.evicted_share[n]:.2%}" for n in report.horizons),
        )
    out.print(table)
    if report.hashed:
        out.print(f"hashed (nothing evicted): {', '.join(report.hashed)}")
    out.print(
        "'> N d': rows whose value was away over N days, which evict_after_days = N would have "
        "evicted; 'new': not seen in the lookback at all"
    )
