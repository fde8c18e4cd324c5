"""The workspace directory: where every stage reads and writes, atomically and under one lock.

Every path in it is named here and nowhere else (docs/ARCHITECTURE.md draws the layout):
logs/day=D/, logs/_manifest/, rejects/day=D/, features/ (vocabularies, the ingest spec),
models/vNNNN/, scores/vNNNN/day=D/, slates/, reports/, registry.sqlite, and the folders the
simulators keep their worlds in. Files are written under a temporary name and renamed into place,
so a reader (or a crashed run) never sees half a file; temporary names never end in `.parquet`,
so globs skip them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from reloop_cli.columns import DAY, MAIN_CHAIN
from reloop_cli.errors import BadInput, WorkspaceLocked

TMP_PREFIX = ".tmp-"
DEFAULT_WORKSPACE = "reloop-workspace"


def json_ready(value: Any) -> Any:
    """`value` with every NaN and infinity turned into null, recursively: JSON has neither, and
    a reader (a browser, jq, another language) refuses the bare `NaN` or `Infinity` Python would
    write."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def version_name(version: int) -> str:
    return f"v{version:04d}"


class Workspace:
    """Paths of one workspace; creating the object touches nothing on disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- paths -------------------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def manifests(self) -> Path:
        """One JSON per ingested batch, written last: it marks the batch done."""
        return self.logs / "_manifest"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def stored_spec_path(self) -> Path:
        """The spec the workspace's logs were ingested with."""
        return self.features / "spec.json"

    @property
    def column_types_path(self) -> Path:
        """The recorded form (integer, decimal, text) of each categorical column."""
        return self.features / "columns.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def slates(self) -> Path:
        """Logged slates (every candidate of every request) and the logging policy."""
        return self.root / "slates"

    @property
    def slate_policy_path(self) -> Path:
        return self.slates / "policy.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def synth(self) -> Path:
        """Where a simulated world's raw day files are written before they are ingested."""
        return self.root / "synth"

    @property
    def served(self) -> Path:
        """Raw logs of what a simulated arm served, before they are ingested."""
        return self.root / "served"

    @property
    def serving(self) -> Path:
        """What `reloop serve` reads and writes: releases/, LIVE, logs/, joined/."""
        return self.root / "serving"

    @property
    def releases(self) -> Path:
        """Published versions, one folder each, swapped in by the LIVE pointer."""
        return self.serving / "releases"

    @property
    def live_pointer(self) -> Path:
        """The published release the server serves (JSON, replaced atomically)."""
        return self.serving / "LIVE"

    @property
    def serving_logs(self) -> Path:
        """The server's impression and click logs (unless `--log-dir` puts them elsewhere)."""
        return self.serving / "logs"

    @property
    def joined(self) -> Path:
        """Impressions labelled by the click join, ready to ingest."""
        return self.serving / "joined"

    @property
    def quarantine(self) -> Path:
        """Files a nightly run refused (damaged server logs, joined files ingest would not
        take), each beside a JSON file that says why; `reloop status` lists them."""
        return self.serving / "quarantine"

    def log_dir(self, day: str) -> Path:
        return self.logs / f"day={day}"

    def reject_dir(self, day: str) -> Path:
        return self.rejects / f"day={day}"

    def manifest_path(self, key: str) -> Path:
        return self.manifests / f"{key}.json"

    def vocab_path(self, scope: str = MAIN_CHAIN) -> Path:
        """A vocabulary scope's table (the main chain's is `vocab.parquet`)."""
        name = "vocab.parquet" if scope == MAIN_CHAIN else f"vocab-{scope}.parquet"
        return self.features / name

    def model_dir(self, version: int) -> Path:
        return self.models / version_name(version)

    def score_dir(self, version: int, day: str) -> Path:
        return self.scores / version_name(version) / f"day={day}"

    def slate_dir(self, day: str) -> Path:
        return self.slates / f"day={day}"

    def world(self, world: int) -> Workspace:
        """The workspace of simulated world `world` (`simulate --world-seeds`)."""
        return Workspace(self.root / "worlds" / f"world-{world}")

    def closed_loop_world(self, world: int) -> Path:
        """Where `simulate --closed-loop` keeps world `world`, an arm's workspace under arms/."""
        return self.root / "closed-loop" / f"world-{world}"

    def closed_loop_arm(self, world: int, arm: str) -> Workspace:
        return Workspace(self.closed_loop_world(world) / "arms" / arm)

    def online_policy_world(self, world: int) -> Workspace:
        """Where `simulate --over-http --online-policy` runs world `world`'s promotion policy."""
        return Workspace(self.root / "over-http" / f"policy-world-{world}")

    def over_http_world(self, world: int) -> Workspace:
        """Where `simulate --closed-loop --over-http` runs world `world`: a workspace of its own
        that `reloop serve` and `reloop run --from-server` share, as in production."""
        return Workspace(self.root / "over-http" / f"world-{world}")

    # --- reading -----------------------------------------------------------------------------
    def days(self) -> list[str]:
        """Ingested days, oldest first."""
        if not self.logs.is_dir():
            return []
        return sorted(
            p.name.removeprefix("day=")
            for p in self.logs.iterdir()
            if p.name.startswith("day=") and any(p.glob("*.parquet"))
        )

    def require_day(self, day: str) -> str:
        if day not in self.days():
            known = self.days()
            hint = f"ingested days: {known[0]} .. {known[-1]}" if known else "nothing ingested yet"
            raise BadInput(f"{self.root}: no logs for day {day} ({hint})")
        return day

    def scan_logs(self, days: list[str]) -> pl.LazyFrame:
        """All ingested rows of the given days, lazily, with a `day` column."""
        frames = [
            pl.scan_parquet(self.log_dir(day) / "*.parquet").with_columns(pl.lit(day).alias(DAY))
            for day in days
        ]
        return pl.concat(frames, how="diagonal_relaxed")

    def has_scores(self, version: int, day: str) -> bool:
        return any(self.score_dir(version, day).glob("*.parquet"))

    def scan_scores(self, version: int, day: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.score_dir(version, day) / "*.parquet")

    # --- writing -----------------------------------------------------------------------------
    def write_parquet(self, frame: pl.DataFrame, path: Path) -> None:
        """Write a Parquet file so that it appears whole or not at all."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}.part")
        try:
            frame.write_parquet(tmp, statistics=True)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def write_json(self, payload: Any, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}.part")
        try:
            text = json.dumps(json_ready(payload), indent=2, sort_keys=True, allow_nan=False)
            tmp.write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def staging_dir(self, parent: Path) -> Path:
        """A fresh temporary directory beside where a finished directory will be renamed to."""
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def missing_folders(self, *folders: Path) -> list[Path]:
        """Which of these folders (and the workspace root and its parents) do not exist yet,
        innermost first: what a command will create, to take away again if it is refused."""
        wanted = [*folders, self.root, *self.root.parents]
        return [p for p in dict.fromkeys(wanted) if not p.exists()]

    @staticmethod
    def prune_empty(folders: list[Path]) -> None:
        """Remove those of `folders` that exist and are empty, innermost first."""
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()

    def clean_stale_temps(self) -> int:
        """Remove what crashed runs left under temporary names; call only under the lock."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.rglob(f"{TMP_PREFIX}*"):
            if path.is_relative_to(self.serving_logs):
                continue  # the server's, written beside a run and never under its lock
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        return removed

    def make_root(self) -> None:
        """Create the workspace folder (and its parents) or say in one line why it cannot be."""
        for path in (self.root, *self.root.parents):
            if path.exists() and not path.is_dir():
                what = "the workspace" if path == self.root else f"a folder above {self.root}"
                raise BadInput(f"{path}: is a file, but it would have to be {what}; give a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadInput(self._unwritable(error)) from None

    def _unwritable(self, error: OSError) -> str:
        reason = error.strerror or type(error).__name__
        return (
            f"{self.root}: cannot write the workspace here ({reason}); give a folder you can write"
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workspace's one lock; a second holder fails at once.

        `flock` is released by the kernel when its process dies, so a lock left by a killed run
        never blocks the next one. A workspace folder this lock had to create, and that holds
        nothing but the lock when it is released (a command refused for bad input), is removed
        again with every folder made for it: a refused command leaves no path behind.
        """
        created = self.missing_folders()
        self.make_root()
        path = self.root / ".lock"
        try:
            handle = open(path, "a+")  # noqa: SIM115  (closed by the `with` below)
        except OSError as error:
            raise BadInput(self._unwritable(error)) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise WorkspaceLocked(
                    f"{self.root}: workspace is locked by {holder}; wait for it to finish"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                self.clean_stale_temps()
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                if [p.name for p in self.root.iterdir()] == [".lock"]:
                    path.unlink()  # a refused command leaves nothing, not even its lock
                    self.prune_empty(created)
                fcntl.flock(handle, fcntl.LOCK_UN)
