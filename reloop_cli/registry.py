"""registry.sqlite: which versions exist, their lineage and metrics, and which one is live.

The model directory (`models/vNNNN/meta.json`) is the source of truth for a version; the registry
indexes it. A version whose directory was renamed into place but whose row was not yet written
(a crash between the two) is picked up again by `sync`.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from typing import Any

from reloop_cli.workspace import Workspace

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    chain TEXT NOT NULL,
    parent INTEGER,
    day TEXT NOT NULL,
    loss TEXT NOT NULL,
    created TEXT NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live (
    chain TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    since TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    version INTEGER NOT NULL,
    day TEXT NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (version, day)
);
"""


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """A thin, typed door onto registry.sqlite."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        workspace.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(workspace.registry_path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.sync()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self) -> None:
        """Index every finished version directory that has no row yet."""
        if not self.workspace.models.is_dir():
            return
        known = {row[0] for row in self.db.execute("SELECT version FROM versions")}
        for meta_path in sorted(self.workspace.models.glob("v[0-9]*/meta.json")):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta["version"] not in known:
                self.add_version(meta)

    def next_version(self) -> int:
        on_disk = [int(p.name[1:]) for p in self.workspace.models.glob("v[0-9]*")]
        (in_db,) = self.db.execute("SELECT COALESCE(MAX(version), 0) FROM versions").fetchone()
        return max([in_db, *on_disk]) + 1

    def add_version(self, meta: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    meta["version"],
                    meta["chain"],
                    meta["parent"],
                    meta["day"],
                    meta["loss"],
                    meta["created"],
                    json.dumps(meta, sort_keys=True),
                ),
            )

    def version_meta(self, version: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT meta FROM versions WHERE version = ?", (version,)).fetchone()
        return json.loads(row[0]) if row else None

    def versions(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT meta FROM versions ORDER BY version").fetchall()
        return [json.loads(r[0]) for r in rows]

    def live(self, chain: str) -> int | None:
        row = self.db.execute("SELECT version FROM live WHERE chain = ?", (chain,)).fetchone()
        return row[0] if row else None

    def set_live(self, chain: str, version: int) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO live VALUES (?, ?, ?)", (chain, version, now_utc())
            )

    def clear_live(self, chain: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM live WHERE chain = ?", (chain,))

    def record_metrics(self, version: int, day: str, metrics: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?)",
                (version, day, json.dumps(metrics, sort_keys=True)),
            )
