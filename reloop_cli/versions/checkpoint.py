"""A version on disk: models/vNNNN/{weights.pt, meta.json}, made visible by one rename.

Weights are a plain state dict read back with `torch.load(weights_only=True)`; everything else
(spec, vocabulary sizes, lineage, seed, metrics) is JSON. Nothing here unpickles objects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reloop_cli.errors import BadInput
from reloop_cli.models import build_model
from reloop_cli.models.base import CTRModel
from reloop_cli.runtime.faults import crash_point
from reloop_cli.spec.layout import field_slots
from reloop_cli.spec.pipeline import Spec, spec_from_dict
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace

WEIGHTS = "weights.pt"
META = "meta.json"


@dataclass
class LoadedVersion:
    """A trained version ready to score, with the spec it was trained under."""

    model: CTRModel
    meta: dict[str, Any]
    spec: Spec


def publish_version(
    ws: Workspace, registry: Registry, model: CTRModel, meta: dict[str, Any], staging: Path
) -> int:
    """Write weights and metadata into `staging` (a folder from `ws.staging_dir(ws.models)`
    holding nothing else), then rename it to the next version."""
    version = registry.next_version()
    meta = {**meta, "version": version}
    torch.save(model.state_dict(), staging / WEIGHTS)
    ws.write_json(meta, staging / META)
    crash_point("train")  # trained, not yet published: the version must not exist
    os.rename(staging, ws.model_dir(version))  # the version appears whole, or not at all
    crash_point("publish")  # published, not yet in the registry: `Registry.sync` finds it
    registry.add_version(meta)
    return version


def load_version(ws: Workspace, version: int) -> LoadedVersion:
    folder = ws.model_dir(version)
    if not (folder / META).is_file():
        raise BadInput(f"{ws.root}: version {version} does not exist")

    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    spec = spec_from_dict(meta["spec"], f"{folder / META}")
    model = build_model(spec.model, meta["field_sizes"], meta["n_dense"], field_slots(spec))
    state = torch.load(folder / WEIGHTS, weights_only=True, map_location="cpu")
    model.load_state_dict(state)
    model.eval()
    return LoadedVersion(model, meta, spec)
