"""Which arm of a running experiment a request is served by, and the pointer that says so.

The nightly run writes `serving/CANDIDATE` (one atomic rename, like `LIVE`) while an experiment
runs, and removes it when the experiment ends:

    {"experiment": "e0003-...", "release": "v0009-...", "version": 9, "mode": "canary",
     "share": 0.05, "stage": 1}

- `canary` (and `aa`, where the candidate is the live release itself): a request goes to the
  candidate when its unit's bucket is below the share. The bucket is a hash of the experiment id
  and the unit's value (BLAKE2b, not Python's salted `hash`), so one user lands in the same arm
  on every request, across restarts and across `--workers`; raising the share only moves units
  from live to the candidate (monotone: a unit in the candidate at 5% is still there at 50%).
  The experiment id salts it, so two experiments split users independently.
- `shadow`: every request is answered by live and also scored by the candidate, whose pCTR is
  logged (`shadow_pctr`) and never shown.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reloop_cli.errors import BadInput

CANDIDATE_POINTER = "CANDIDATE"
ARM_MODES = ("canary", "shadow", "aa")
BUCKETS = 10_000  # a share is honoured to 1 in 10,000
LIVE_ARM, CANDIDATE_ARM = "live", "candidate"


def bucket(experiment: str, unit: str) -> int:
    """The unit's bucket in 0..BUCKETS-1 for this experiment: the same on every machine."""
    digest = hashlib.blake2b(f"{experiment}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_candidate(experiment: str, unit: str, share: float) -> bool:
    """Whether the unit sees the candidate at `share` (monotone in the share)."""
    return bucket(experiment, unit) < round(share * BUCKETS)


def unit_of(rows: list[dict[str, Any]], field: str, request_id: str) -> str:
    """The randomisation unit of a request: the unit field's value (context or the first
    candidate that has it), else the request itself."""
    if field:
        for row in rows:
            value = row.get(field)
            if value is not None and value != "":
                return f"{field}={value}"
    return f"request={request_id}"


@dataclass(frozen=True)
class ArmPointer:
    """What `serving/CANDIDATE` says, read by the server."""

    experiment: str
    release: str
    version: int
    mode: str
    share: float
    stage: int

    def to_dict(self) -> dict:
        return {
            "experiment": self.experiment,
            "release": self.release,
            "version": self.version,
            "mode": self.mode,
            "share": self.share,
            "stage": self.stage,
        }


def read_candidate(serving_root: Path) -> ArmPointer | None:
    """The running experiment's pointer, or None when none runs (read lock-free by servers)."""
    path = serving_root / CANDIDATE_POINTER
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ArmPointer(
            str(raw["experiment"]),
            str(raw["release"]),
            int(raw["version"]),
            str(raw["mode"]),
            float(raw["share"]),
            int(raw["stage"]),
        )
    except (ValueError, KeyError, TypeError) as error:  # damaged by hand or by the disk
        raise BadInput(
            f"{path}: unreadable experiment pointer ({type(error).__name__}: {error}); "
            "`reloop experiment stop` removes it"
        ) from None
