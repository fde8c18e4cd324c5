"""The spec a workspace's logs were ingested with (`features/spec.json`), and the [data] settings
that stay fixed for the workspace's life because they decide what a stored row means."""

from __future__ import annotations

import json
from pathlib import Path

from reloop_cli.errors import BadInput
from reloop_cli.spec.pipeline import Spec, load_spec, spec_from_dict, with_environment
from reloop_cli.store.workspace import Workspace


def spec_for(ws: Workspace, path: Path | None) -> Spec:
    """The spec at `path`, or else the one the workspace was ingested with."""
    if path is not None:
        return load_spec(path)
    spec = stored_spec(ws)
    if spec is None:
        raise BadInput(f"{ws.root}: no spec given and nothing ingested yet; pass a spec")
    return spec


def stored_spec(ws: Workspace) -> Spec | None:
    """The spec the workspace's logs were ingested with, if any, with RELOOP_* variables applied
    (as `load_spec` applies them to a file)."""
    path = ws.stored_spec_path
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    return spec_from_dict(with_environment(raw), str(path))


# The [data] settings that decide what a stored row means and how it is encoded; they are fixed
# for a workspace's life. The others say how to read a source (format, encoding, time format,
# allowances) and may change when a log source does.
FIXED_DATA_SETTINGS = (
    "label",
    "categorical",
    "numeric",
    "multivalued",
    "multivalued_separator",
    "max_values",
    "numeric_transform",
    "timezone",
)


def check_spec_fits(ws: Workspace, spec: Spec) -> None:
    """Refuse a spec whose fixed [data] settings differ from the workspace's; writes nothing."""
    previous = stored_spec(ws)
    if previous is None:
        return
    if previous.data.timezone != spec.data.timezone and ws.days():
        raise BadInput(
            f"{spec.source}: data.timezone '{spec.data.timezone}' differs from "
            f"'{previous.data.timezone}', the zone this workspace's days were cut in "
            f"({ws.stored_spec_path}); days cannot be re-cut: keep the zone or use a new workspace"
        )
    old, new = previous.to_dict()["data"], spec.to_dict()["data"]
    changed = [key for key in FIXED_DATA_SETTINGS if old[key] != new[key]]
    if changed:
        raise BadInput(
            f"{spec.source}: data.{changed[0]} differs from the one this workspace was ingested "
            f"with ({ws.stored_spec_path}); it decides how rows are encoded: use a new workspace"
        )


def remember_spec(ws: Workspace, spec: Spec) -> None:
    """Record the first ingest spec of a workspace (after `check_spec_fits` passed)."""
    if stored_spec(ws) is None:
        ws.write_json(spec.to_dict(), ws.stored_spec_path)
