"""Commands about what is live: status (every chain, runs, quarantined files), promote and
rollback (a person overriding the gate, recorded as such)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reloop_cli.cli.common import JsonOpt, WorkspaceOpt, app, emit_json, fmt, out, run_stage
from reloop_cli.store.workspace import DEFAULT_WORKSPACE, Workspace

PANEL = "In production"


@app.command("status", rich_help_panel=PANEL)
def status_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    chain: Annotated[
        str, typer.Option(help="Which chain of versions (simulate keeps one per arm).")
    ] = "main",
    as_json: JsonOpt = False,
) -> None:
    """The live version, the last runs, and every version with its gate metrics; the other
    chains (simulate's arms) and any file a nightly run quarantined.

    Example: reloop status -w reloop-workspace

    Example: reloop status --chain simulate-reloop
    """
    from reloop_cli.operations.promotion import status
    from reloop_cli.store.registry import Registry

    ws = Workspace(workspace)

    def action():
        Registry.require(ws)
        with Registry(ws) as registry:
            return status(registry, chain=chain, runs=runs, ws=ws)

    report = run_stage(action)
    if as_json:
        emit_json(report)
        return
    live = f"v{report['live']}" if report["live"] else "none"
    out.print(f"live version (chain {chain}): {live}")
    from reloop_cli.cli.experiment import experiment_table

    for entry in report["experiments"][:1]:  # the newest; `reloop experiment status` has more
        out.print(experiment_table(entry))
    others = [c for c in report["chains"] if c["chain"] != chain]
    if others:
        chains = Table("chain", "versions", "live", title="other chains (reloop status --chain)")
        for entry in others:
            shown = f"v{entry['live']}" if entry["live"] else "-"
            chains.add_row(entry["chain"], str(entry["versions"]), shown)
        out.print(chains)
    for record in report["quarantined"]:
        out.print(
            f"quarantined: {record['source']}: {record['reason']} (now {record['path']})",
            soft_wrap=True,
            markup=False,
        )
    if report["vocabulary"]:
        rows = Table(
            "field",
            "rows",
            "admitted",
            "evicted",
            title=f"vocabulary of the live version ({report['embedding_updates']} updates)",
        )
        for name, entry in report["vocabulary"].items():
            hashed = f" (hashed into {entry['hashed']:,})" if entry.get("hashed") else ""
            rows.add_row(
                name,
                f"{entry['live']:,}{hashed}",
                f"{entry.get('admitted', 0):,}",
                f"{entry.get('evicted', 0):,}",
            )
        out.print(rows)
    table = Table(
        "version",
        "day",
        "parent",
        "loss",
        "status",
        "holdout AUC",
        "holdout Logloss",
        title=f"versions (chain {chain})",
    )
    for v in report["versions"]:
        table.add_row(
            f"v{v['version']}",
            v["day"],
            f"v{v['parent']}" if v["parent"] else "-",
            v["loss"],
            v["status"],
            fmt(v["holdout_auc"]),
            fmt(v["holdout_logloss"]),
        )
    out.print(table if report["versions"] else f"no versions in chain {chain} yet")
    runs_table = Table("run", "started", "ended", "outcome", "command", title="recent runs")
    for r in report["runs"]:
        runs_table.add_row(
            str(r["id"]), r["started"], r["ended"] or "-", r["outcome"], r["command"]
        )
    if report["runs"]:
        out.print(runs_table)


@app.command("promote", rich_help_panel=PANEL)
def promote_command(
    version: Annotated[int, typer.Argument(help="Version to make live.")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    as_json: JsonOpt = False,
) -> None:
    """Make a version live by hand, overriding the gate (recorded as a manual promotion).

    Example: reloop promote 7
    """
    from reloop_cli.operations.promotion import promote_version
    from reloop_cli.store.registry import Registry

    ws = Workspace(workspace)

    def action():
        Registry.require(ws)
        with ws.lock(), Registry(ws) as registry:
            return promote_version(ws, registry, version)

    previous = run_stage(action)
    if as_json:
        emit_json({"live": version, "replaced": previous, "reason": "manual promote"})
        return
    out.print(
        f"v{version} is live (was {'v' + str(previous) if previous else 'none'}); "
        "recorded as a manual promotion"
    )


@app.command("rollback", rich_help_panel=PANEL)
def rollback_command(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE), as_json: JsonOpt = False
) -> None:
    """Put back the version that was live before the current one (recorded as a rollback).

    Example: reloop rollback
    """
    from reloop_cli.operations.promotion import rollback
    from reloop_cli.store.registry import Registry

    ws = Workspace(workspace)

    def action():
        Registry.require(ws)
        with ws.lock(), Registry(ws) as registry:
            return rollback(ws, registry)

    current, target = run_stage(action)
    if as_json:
        emit_json({"live": target, "rolled_back": current, "reason": "rollback"})
        return
    out.print(f"rolled back: v{target} is live again (v{current} marked rejected)")
