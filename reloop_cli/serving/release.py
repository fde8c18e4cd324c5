"""A version published for serving: one folder under `serving/releases/`, and the `serving/LIVE`
pointer that names the one being served.

A release is written whole under a temporary name, renamed into `releases/`, and only then does
the pointer (a small JSON file, replaced by one atomic rename) name it; so a reader sees the old
release or the new one, whole, never a mix. A server reads only releases and the pointer, never
the workspace lock or the registry, so a nightly run never blocks it.

    serving/LIVE                           {"release": "v0007-...", "version": 7, ...}
    serving/releases/v0007-<time>-<id>/
      manifest.json   version, chain, when, what each file is
      meta.json       the version's metadata (spec, field sizes, vocabulary generation)
      weights.pt      its state dict (read with torch.load(weights_only=True))
      vocabulary.parquet  field, value, index: the rows it knows
      columns.json    the workspace's canonical form of each categorical column
      model.pt, features.json   TorchScript and its feature map, for other serving stacks
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import torch

from reloop_cli.adapt.keys import KeyStats
from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.data import column_types
from reloop_cli.errors import BadInput
from reloop_cli.features import vocabulary
from reloop_cli.models import build_model
from reloop_cli.models.base import CTRModel
from reloop_cli.serving.arms import CANDIDATE_POINTER, read_candidate
from reloop_cli.spec.layout import field_slots
from reloop_cli.spec.pipeline import Spec, spec_from_dict
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import META, WEIGHTS

MANIFEST = "manifest.json"
VOCABULARY = "vocabulary.parquet"
COLUMNS = "columns.json"
KEY_STATS = "key_stats.json"  # the standardised memory key's mean and scale (adapt/keys.py)


@dataclass
class Release:
    """A release read back: the version's model in eval mode, its spec, its vocabulary rows and
    the column forms, and where it lies."""

    name: str
    version: int
    chain: str
    path: Path
    spec: Spec
    model: CTRModel
    meta: dict[str, Any]
    vocab: pl.DataFrame
    forms: dict[str, column_types.ColumnType]
    published_at: str
    key_stats: KeyStats | None = None  # for `adapt.memory_key = "standardized"`


def release_name(version: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"v{version:04d}-{stamp}-{uuid.uuid4().hex[:6]}"


def stage_release(ws: Workspace, version: int, chain: str = MAIN_CHAIN) -> tuple[Path, dict]:
    """Write a release of `version` into a fresh temporary folder under releases/; returns the
    folder and its manifest (`commit_release` moves it into place)."""
    source = ws.model_dir(version)
    if not (source / META).is_file():
        raise BadInput(f"{ws.root}: version {version} does not exist; nothing to publish")
    meta = json.loads((source / META).read_text(encoding="utf-8"))
    staging = ws.staging_dir(ws.releases)
    shutil.copy2(source / WEIGHTS, staging / WEIGHTS)
    ws.write_json(meta, staging / META)
    ws.write_parquet(vocabulary.for_version(ws, meta), staging / VOCABULARY)
    ws.write_json(
        {name: form.to_dict() for name, form in column_types.load(ws).items()}, staging / COLUMNS
    )
    name = release_name(version)
    manifest = {
        "release": name,
        "version": version,
        "chain": chain,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {
            "meta": META,
            "weights": WEIGHTS,
            "vocabulary": VOCABULARY,
            "columns": COLUMNS,
            "torchscript": "model.pt",
            "feature_map": "features.json",
        },
    }
    return staging, manifest


def _place(ws: Workspace, staging: Path, manifest: dict) -> Path:
    """Write the manifest and rename the staged release into `releases/` (whole, or not at
    all); the pointer that names it is written after."""
    ws.write_json(manifest, staging / MANIFEST)
    target = ws.releases / manifest["release"]
    os.rename(staging, target)
    return target


def commit_release(ws: Workspace, staging: Path, manifest: dict) -> Path:
    """Name the staged release and point LIVE at it (two renames, the pointer last)."""
    target = _place(ws, staging, manifest)
    pointer = {k: manifest[k] for k in ("release", "version", "chain", "published_at")}
    ws.write_json(pointer, ws.live_pointer)
    return target


def commit_candidate(ws: Workspace, staging: Path, manifest: dict, arm: dict) -> Path:
    """Name the staged release and point CANDIDATE at it, with the experiment's arm settings
    (`serving/arms.py`); LIVE is left as it is."""
    target = _place(ws, staging, manifest)
    ws.write_json({**arm, "release": manifest["release"]}, ws.serving / CANDIDATE_POINTER)
    return target


def pointer(serving_root: Path) -> dict | None:
    """What LIVE names, or None before anything was published (read by servers, lock-free)."""
    path = serving_root / "LIVE"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def load_release(serving_root: Path, name: str) -> Release:
    """A release read into memory: the model rebuilt from its spec and weights."""
    path = serving_root / "releases" / name
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    spec = spec_from_dict(meta["spec"], str(path / META))
    model = build_model(spec.model, meta["field_sizes"], meta["n_dense"], field_slots(spec))
    model.load_state_dict(torch.load(path / WEIGHTS, weights_only=True, map_location="cpu"))
    model.eval()
    raw_forms = json.loads((path / COLUMNS).read_text(encoding="utf-8"))
    forms = {name: column_types.ColumnType(**form) for name, form in raw_forms.items()}
    return Release(
        name,
        int(manifest["version"]),
        manifest["chain"],
        path,
        spec,
        model,
        meta,
        pl.read_parquet(path / VOCABULARY),
        forms,
        manifest["published_at"],
        KeyStats(**json.loads((path / KEY_STATS).read_text(encoding="utf-8")))
        if (path / KEY_STATS).exists()
        else None,
    )


def prune_releases(ws: Workspace, keep: int) -> list[str]:
    """Remove all but the newest `keep` releases (the live one and an experiment's candidate
    always stay)."""
    try:
        candidate = read_candidate(ws.serving)
    except BadInput:  # which release it names is unknown: prune nothing until it is fixed
        return []
    kept = {(pointer(ws.serving) or {}).get("release"), candidate.release if candidate else None}
    folders = [p for p in ws.releases.glob("v*") if p.is_dir()]
    names = [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime)]  # oldest first
    removed = [n for n in names[:-keep] if n not in kept] if len(names) > keep else []
    for name in removed:
        shutil.rmtree(ws.releases / name, ignore_errors=True)
    return removed
