"""A person overriding the gate: `reloop promote N` and `reloop rollback`, both recorded as such,
and `reloop status`, what is live and how it got there."""

from __future__ import annotations

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.errors import BadInput
from reloop_cli.operations.deploy import publish_live
from reloop_cli.operations.experiment import experiments_status, stop_experiment
from reloop_cli.store.quarantine import quarantined
from reloop_cli.store.registry import Registry, VersionStatus
from reloop_cli.store.workspace import Workspace


def promote_version(
    ws: Workspace, registry: Registry, version: int, chain: str = MAIN_CHAIN
) -> int | None:
    """Make `version` live by hand and publish it for serving; returns the version it
    replaced."""
    meta = registry.version_meta(version)
    if meta is None:
        raise BadInput(f"promote: version {version} does not exist")
    if meta["chain"] != chain:
        raise BadInput(
            f"promote: version {version} belongs to chain '{meta['chain']}', not {chain}"
        )
    previous = registry.live(chain)
    stop_experiment(ws, registry, f"overruled: reloop promote {version}")
    registry.promote(chain, version, "manual promote", {"manual": True, "replaced": previous})
    publish_live(ws, registry, chain)
    return previous


def rollback(ws: Workspace, registry: Registry, chain: str = MAIN_CHAIN) -> tuple[int, int]:
    """Put back the version that was live before the current one, published for serving at
    once; returns (from, to)."""
    history = registry.live_history(chain)
    current = registry.live(chain)
    earlier = [h["version"] for h in history if h["version"] != current]
    if current is None or not earlier:
        raise BadInput(f"rollback: chain '{chain}' has no earlier live version to go back to")
    target = earlier[-1]
    stop_experiment(ws, registry, "overruled: reloop rollback")
    registry.promote(chain, target, "rollback", {"manual": True, "rolled_back": current})
    registry.decide(current, VersionStatus.REJECTED, {"manual": True, "rolled_back_to": target})
    publish_live(ws, registry, chain)
    return current, target


def status(
    registry: Registry, chain: str = MAIN_CHAIN, runs: int = 10, ws: Workspace | None = None
) -> dict:
    """Live version, recent runs and the version history with their gate metrics; every chain
    the registry holds (simulate's arms too), and the files a nightly run quarantined."""
    versions = []
    for entry in registry.versions(chain):
        holdout = [m for m in registry.metrics(entry["version"]) if m["scope"] == "holdout"]
        own = next((m for m in holdout if m["day"] == entry["day"]), None)
        versions.append(
            {
                "version": entry["version"],
                "day": entry["day"],
                "parent": entry["parent"],
                "loss": entry["loss"],
                "status": entry["status"],
                "created": entry["created"],
                "alpha": entry["meta"].get("alpha"),
                "seed": entry["meta"].get("seed"),
                "rows": entry["meta"].get("rows"),
                "holdout_auc": own["auc"] if own else None,
                "holdout_logloss": own["logloss"] if own else None,
                "decision": entry["decision"],
            }
        )
    live = registry.live(chain)
    live_meta = registry.version_meta(live) if live is not None else None
    return {
        "chain": chain,
        "live": live,
        # rows per field of the live version's vocabulary: live, and admitted / evicted by the
        # update it trained after (a hashed field: its buckets)
        "vocabulary": (live_meta or {}).get("vocabulary", {}),
        "embedding_updates": (live_meta or {}).get("embedding_updates"),
        "versions": versions,
        "runs": registry.runs(runs),
        "live_history": registry.live_history(chain),
        "chains": registry.chains(),
        "quarantined": [q.to_dict() for q in quarantined(ws)] if ws is not None else [],
        "experiments": experiments_status(registry),
    }
