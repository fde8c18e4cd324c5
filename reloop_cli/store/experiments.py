"""Experiments in registry.sqlite: each online test of a candidate against live, its stage and
share, and every nightly look with its evidence and decision, so `reloop status`, the report and
a person auditing a promotion read the same record.

An experiment's status: running, promoted (the candidate went live), rolled_back (it was worse),
inconclusive (no decision by `experiment.max_nights`), stopped (a person ended it, or promoted or
rolled back by hand).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from reloop_cli.store.registry import Registry, now_utc

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    live INTEGER NOT NULL,
    mode TEXT NOT NULL,           -- canary | shadow | aa (the current phase)
    stage INTEGER NOT NULL,       -- 0: shadow; 1..: the index of the share, from 1
    share REAL NOT NULL,
    stage_looks INTEGER NOT NULL DEFAULT 0,
    looks INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'running',
    started TEXT NOT NULL,
    ended TEXT,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_looks (
    experiment TEXT NOT NULL,
    look INTEGER NOT NULL,
    at TEXT NOT NULL,
    as_of REAL NOT NULL,
    stage INTEGER NOT NULL,
    evidence TEXT NOT NULL,
    decision TEXT NOT NULL,
    PRIMARY KEY (experiment, look)
);
"""
ENDED = ("promoted", "rolled_back", "inconclusive", "stopped")


@dataclass
class Experiment:
    """One experiment as recorded; `settings` holds the [experiment] spec it runs under."""

    id: str
    chain: str
    candidate: int
    live: int
    mode: str
    stage: int
    share: float
    stage_looks: int
    looks: int
    status: str
    started: str
    ended: str | None
    settings: dict[str, Any]

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_dict(self) -> dict:
        return asdict(self)


def new_experiment_id(candidate: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"e-v{candidate:04d}-{stamp}-{uuid.uuid4().hex[:6]}"


class Experiments:
    """The experiments tables, through the registry's connection (one transaction each)."""

    def __init__(self, registry: Registry) -> None:
        self.db = registry.db
        self.db.executescript(_SCHEMA)

    def add(self, experiment: Experiment) -> None:
        fields = experiment.to_dict()
        fields["settings"] = json.dumps(fields["settings"], sort_keys=True)
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self.db:
            self.db.execute(
                f"INSERT INTO experiments ({names}) VALUES ({marks})", tuple(fields.values())
            )

    def update(self, experiment: Experiment) -> None:
        with self.db:
            self.db.execute(
                "UPDATE experiments SET mode = ?, stage = ?, share = ?, stage_looks = ?, "
                "looks = ?, status = ?, ended = ? WHERE id = ?",
                (
                    experiment.mode,
                    experiment.stage,
                    experiment.share,
                    experiment.stage_looks,
                    experiment.looks,
                    experiment.status,
                    experiment.ended,
                    experiment.id,
                ),
            )

    def running(self, chain: str) -> Experiment | None:
        row = self.db.execute(
            "SELECT * FROM experiments WHERE chain = ? AND status = 'running' "
            "ORDER BY started DESC LIMIT 1",
            (chain,),
        ).fetchone()
        return _experiment(row) if row else None

    def get(self, experiment_id: str) -> Experiment | None:
        row = self.db.execute("SELECT * FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        return _experiment(row) if row else None

    def recent(self, limit: int = 10) -> list[Experiment]:
        rows = self.db.execute(
            "SELECT * FROM experiments ORDER BY started DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_experiment(row) for row in rows]

    def record_look(
        self, experiment: Experiment, as_of: float, evidence: dict, decision: str
    ) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO experiment_looks "
                "(experiment, look, at, as_of, stage, evidence, decision) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    experiment.id,
                    experiment.looks,
                    now_utc(),
                    as_of,
                    experiment.stage,
                    json.dumps(evidence, sort_keys=True),
                    decision,
                ),
            )

    def looks(self, experiment_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM experiment_looks WHERE experiment = ? ORDER BY look", (experiment_id,)
        ).fetchall()
        return [{**dict(row), "evidence": json.loads(row["evidence"])} for row in rows]


def _experiment(row) -> Experiment:
    fields = dict(row)
    fields["settings"] = json.loads(fields["settings"])
    return Experiment(**fields)
