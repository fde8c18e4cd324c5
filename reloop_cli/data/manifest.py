"""Which batches a workspace has ingested: each batch's key and its manifest
(`logs/_manifest/<key>.json`, written last, so it marks the batch done).

A batch is keyed by the content of its files and their Hive partition folders (and, for logs
split into pseudo-days, how they were split), never by how they were read: a changed allowance or
format does not make an ingested file look new. Workspaces ingested by reloop 0.1, whose keys
hashed the whole [data] section, keep recognising their files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from reloop_cli.data.inputs import InputFile
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _batch_key(identities: list[str], days: int | None, start: str) -> str:
    """A batch's key: its files' content (and partition folders) and, for logs split into
    pseudo-days, how they were split. How the files are read does not enter it, so a changed
    allowance or format never makes an ingested file look new."""
    payload = json.dumps([identities, days, start], sort_keys=True)
    return "b2-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


# The [data] settings of reloop 0.1, whose batch keys hashed them all: workspaces ingested then
# keep recognising their files.
_LEGACY_KEY_SETTINGS = (
    "label",
    "categorical",
    "numeric",
    "multivalued",
    "multivalued_separator",
    "max_values",
    "numeric_transform",
    "format",
    "columns",
    "time_column",
    "time_format",
    "impression_id",
    "pctr",
    "oracle",
    "start_date",
    "max_reject_fraction",
)


def _legacy_key(digests: list[str], spec: Spec, days: int | None, start: str) -> str:
    settings = {k: v for k, v in dataclasses.asdict(spec.data).items() if k in _LEGACY_KEY_SETTINGS}
    payload = json.dumps([digests, settings, days, start], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ingested_before(
    ws: Workspace, spec: Spec, group: list[InputFile], days: int | None, start: str
) -> tuple[str, bool]:
    """The batch's key, and whether it (or, under reloop 0.1's key, its files) is in already."""
    digests = [file_digest(f.path) for f in group]
    key = _batch_key([f.identity(d) for f, d in zip(group, digests, strict=True)], days, start)
    if ws.manifest_path(key).exists():
        return key, True
    legacy = (
        not any(f.partition for f in group)
        and ws.manifest_path(_legacy_key(digests, spec, days, start)).exists()
    )
    return key, legacy


def is_ingested(ws: Workspace, spec: Spec, source: InputFile) -> bool:
    """Whether this file (with a time column, keyed on its own) is in the workspace already."""
    return ingested_before(ws, spec, [source], None, spec.data.start_date)[1]
