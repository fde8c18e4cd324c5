"""registry.sqlite: which versions exist, their lineage, metrics and status, which one is live,
and every run.

The model directory (`models/vNNNN/meta.json`) is the source of truth for a version's existence;
the registry indexes it. A version whose folder was renamed into place but whose row was not yet
written (a crash between the two) is picked up again by `sync`. SQLite in WAL mode, stdlib only.

A version's status is a `VersionStatus`: candidate (trained, not yet judged), live, rejected
(the gate or a person said no), inconclusive (too few holdout clicks to judge), retired (was
live, replaced).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.errors import BadInput
from reloop_cli.store.workspace import Workspace

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    chain TEXT NOT NULL,
    parent INTEGER,
    day TEXT NOT NULL,
    loss TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'candidate',  -- a VersionStatus
    decision TEXT,
    created TEXT NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain TEXT NOT NULL,
    version INTEGER NOT NULL,
    since TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    version INTEGER NOT NULL,
    day TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'day',
    metrics TEXT NOT NULL,
    PRIMARY KEY (version, day, scope)
);
CREATE TABLE IF NOT EXISTS served (
    chain TEXT NOT NULL,
    day TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (chain, day)
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain TEXT NOT NULL,
    version INTEGER NOT NULL,
    release TEXT NOT NULL,
    published TEXT NOT NULL,
    hook TEXT,
    hook_returncode INTEGER,
    hook_output TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    started TEXT NOT NULL,
    ended TEXT,
    outcome TEXT NOT NULL DEFAULT 'running',
    detail TEXT
);
"""


class VersionStatus(str, Enum):
    """Where a version stands; the registry's `status` column holds the value."""

    CANDIDATE = "candidate"
    LIVE = "live"
    REJECTED = "rejected"
    INCONCLUSIVE = "inconclusive"
    RETIRED = "retired"

    __str__ = str.__str__  # the value, in f-strings and JSON alike


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """A thin, typed door onto registry.sqlite."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        workspace.make_root()
        self.db = sqlite3.connect(workspace.registry_path, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.sync()

    @staticmethod
    def require(workspace: Workspace) -> None:
        """Refuse a command that reads versions from a workspace that has none yet, before
        anything (the registry file, the lock) is written there."""
        if not workspace.registry_path.is_file():
            raise BadInput(
                f"{workspace.root}: no versions here yet (no registry.sqlite); run `reloop run` "
                "or `reloop train` first, or check --workspace"
            )

    @staticmethod
    def snapshot(workspace: Workspace, chain: str) -> tuple[list[dict[str, Any]], int | None]:
        """(versions of `chain` as (version, day, status) dicts, live version), read without
        creating or changing anything; empty where there is no registry yet."""
        if not workspace.registry_path.exists():
            return [], None
        path = workspace.registry_path
        # With no -wal file the database file is complete and is read as it stands; with one (a
        # writer is open, or died), SQLite's read-only mode reads it through the existing -shm.
        wal = path.with_name(path.name + "-wal").exists()
        db = sqlite3.connect(f"file:{path}?mode=ro" + ("" if wal else "&immutable=1"), uri=True)
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute(
                "SELECT version, day, status FROM versions WHERE chain = ? ORDER BY version",
                (chain,),
            ).fetchall()
            live = db.execute(
                "SELECT version FROM live_history WHERE chain = ? ORDER BY id DESC LIMIT 1",
                (chain,),
            ).fetchone()
        finally:
            db.close()
        return [dict(row) for row in rows], live["version"] if live else None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- versions ------------------------------------------------------------------------------
    def sync(self) -> None:
        """Index every finished version folder that has no row yet."""
        if not self.workspace.models.is_dir():
            return
        known = {row["version"] for row in self.db.execute("SELECT version FROM versions")}
        for meta_path in sorted(self.workspace.models.glob("v[0-9]*/meta.json")):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta["version"] not in known:
                self.add_version(meta)

    def next_version(self) -> int:
        on_disk = [int(p.name[1:]) for p in self.workspace.models.glob("v[0-9]*")]
        in_db = self.db.execute("SELECT COALESCE(MAX(version), 0) FROM versions").fetchone()[0]
        return max([in_db, *on_disk]) + 1

    def add_version(self, meta: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO versions (version, chain, parent, day, loss, created, meta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        return json.loads(row["meta"]) if row else None

    def versions(self, chain: str | None = None) -> list[dict[str, Any]]:
        """Rows of the versions table (meta decoded), oldest first."""
        query = (
            "SELECT version, chain, parent, day, loss, status, decision, created, meta "
            "FROM versions"
        )
        rows = self.db.execute(
            query + (" WHERE chain = ?" if chain else "") + " ORDER BY version",
            (chain,) if chain else (),
        ).fetchall()
        out = []
        for row in rows:
            entry = dict(row)
            entry["meta"] = json.loads(entry["meta"])
            entry["decision"] = json.loads(entry["decision"]) if entry["decision"] else None
            out.append(entry)
        return out

    def chains(self) -> list[dict[str, Any]]:
        """Each chain with versions (the main chain first, then by name): its name, how many
        versions it holds and which is live. `simulate` keeps one chain per arm."""
        rows = self.db.execute(
            "SELECT chain, COUNT(*) AS versions FROM versions GROUP BY chain ORDER BY chain"
        ).fetchall()
        found = [
            {"chain": r["chain"], "versions": r["versions"], "live": self.live(r["chain"])}
            for r in rows
        ]
        return sorted(found, key=lambda c: (c["chain"] != MAIN_CHAIN, c["chain"]))

    def decide(self, version: int, status: VersionStatus, decision: dict[str, Any]) -> None:
        """Record the gate's (or a person's) verdict on a candidate."""
        with self.db:
            self.db.execute(
                "UPDATE versions SET status = ?, decision = ? WHERE version = ?",
                (VersionStatus(status).value, json.dumps(decision, sort_keys=True), version),
            )

    # --- live pointer ----------------------------------------------------------------------------
    def live(self, chain: str) -> int | None:
        row = self.db.execute(
            "SELECT version FROM live_history WHERE chain = ? ORDER BY id DESC LIMIT 1", (chain,)
        ).fetchone()
        return row["version"] if row else None

    def set_live(self, chain: str, version: int, reason: str = "train") -> None:
        """Make `version` the live one of `chain`, retiring the one before."""
        self.promote(chain, version, reason, {"reason": reason})

    def promote(self, chain: str, version: int, reason: str, decision: dict[str, Any]) -> None:
        """Record the verdict and make `version` live, as one transaction."""
        previous = self.live(chain)
        with self.db:
            self.db.execute(
                "UPDATE versions SET decision = ? WHERE version = ?",
                (json.dumps(decision, sort_keys=True), version),
            )
            status = "UPDATE versions SET status = ? WHERE version = ?"
            if previous is not None and previous != version:
                self.db.execute(status, (VersionStatus.RETIRED.value, previous))
            self.db.execute(status, (VersionStatus.LIVE.value, version))
            self.db.execute(
                "INSERT INTO live_history (chain, version, since, reason) VALUES (?, ?, ?, ?)",
                (chain, version, now_utc(), reason),
            )

    def live_history(self, chain: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT version, since, reason FROM live_history WHERE chain = ? ORDER BY id",
            (chain,),
        ).fetchall()
        return [dict(row) for row in rows]

    # --- serving ---------------------------------------------------------------------------------
    def record_served(self, chain: str, day: str, version: int) -> None:
        """`version` was live in `chain` when `day`'s traffic was served (its scores are ỹ_last
        for `last_source = "served"`)."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO served VALUES (?, ?, ?)", (chain, day, version))

    def served_by(self, chain: str, day: str) -> int | None:
        row = self.db.execute(
            "SELECT version FROM served WHERE chain = ? AND day = ?", (chain, day)
        ).fetchone()
        return row["version"] if row else None

    # --- metrics ---------------------------------------------------------------------------------
    def record_metrics(
        self, version: int, day: str, metrics: dict[str, Any], scope: str = "day"
    ) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
                (version, day, scope, json.dumps(metrics, sort_keys=True)),
            )

    def metrics(self, version: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT day, scope, metrics FROM metrics WHERE version = ? ORDER BY day", (version,)
        ).fetchall()
        return [{"day": r["day"], "scope": r["scope"], **json.loads(r["metrics"])} for r in rows]

    # --- deployments -------------------------------------------------------------------------
    def record_deployment(
        self,
        chain: str,
        version: int,
        release: str,
        hook: str | None = None,
        returncode: int | None = None,
        output: str | None = None,
    ) -> None:
        """A version published for serving, and what its `serving.on_publish` command did."""
        with self.db:
            self.db.execute(
                "INSERT INTO deployments (chain, version, release, published, hook, "
                "hook_returncode, hook_output) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (chain, version, release, now_utc(), hook, returncode, output),
            )

    def deployments(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM deployments ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [dict(row) for row in rows]

    # --- runs ------------------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO runs (command, started) VALUES (?, ?)", (command, now_utc())
            )
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int, outcome: str, detail: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET ended = ?, outcome = ?, detail = ? WHERE id = ?",
                (now_utc(), outcome, json.dumps(detail, sort_keys=True, default=str), run_id),
            )

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, command, started, ended, outcome, detail FROM runs "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows
        ]
