"""Quarantine: where a nightly run puts a file it cannot use, so that the night goes on.

A damaged server log (empty, truncated, a column missing or of the wrong type) or a joined file
that ingest refuses would otherwise fail every night that reads it until someone deleted it by
hand. Instead it is moved, whole and unchanged, to

    serving/quarantine/<kind>/<its name>              the file, to inspect or repair
    serving/quarantine/<kind>/<its name>.reason.json  where it came from, why, and when

and named in the run's output and in `reloop status`. Putting a repaired file back where it came
from is all it takes for the next night to read it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from reloop_cli.store.registry import now_utc
from reloop_cli.store.workspace import Workspace

REASON_SUFFIX = ".reason.json"


@dataclass
class Quarantined:
    """One file set aside: where it was, where it is, and why."""

    kind: str  # impressions | clicks | joined
    source: str
    path: str
    reason: str
    when: str

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"{self.source}: {self.reason} (moved to {self.path})"


def quarantine(ws: Workspace, kind: str, path: Path, reason: str, name: str) -> Quarantined:
    """Move `path` into the quarantine under `name` (unique within `kind`), with its reason."""
    folder = ws.quarantine / kind
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    record = Quarantined(kind, str(path), str(target), reason, now_utc())
    ws.write_json(record.to_dict(), target.with_name(target.name + REASON_SUFFIX))
    shutil.move(str(path), target)  # a rename within one file system
    return record


def quarantined(ws: Workspace) -> list[Quarantined]:
    """Every file in quarantine, oldest first."""
    if not ws.quarantine.is_dir():
        return []
    records = []
    for reason in ws.quarantine.glob(f"*/*{REASON_SUFFIX}"):
        fields = json.loads(reason.read_text(encoding="utf-8"))
        if Path(fields["path"]).exists():  # a file put back is no longer in quarantine
            records.append(Quarantined(**fields))
    return sorted(records, key=lambda record: (record.when, record.path))
