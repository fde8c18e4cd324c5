"""The workspace directory: where every stage reads and writes, atomically and under one lock.

Layout (see DESIGN.md): logs/day=D/, rejects/day=D/, features/, models/vNNNN/,
scores/vNNNN/day=D/, registry.sqlite. Files are written under a temporary name and renamed into
place, so a reader (or a crashed run) never sees half a file; temporary names never end in
`.parquet`, so globs skip them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from reloop_cli.errors import BadInput, WorkspaceLocked

TMP_PREFIX = ".tmp-"
DEFAULT_WORKSPACE = "reloop-workspace"


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
    def rejects(self) -> Path:
        return self.root / "rejects"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.sqlite"

    def log_dir(self, day: str) -> Path:
        return self.logs / f"day={day}"

    def model_dir(self, version: int) -> Path:
        return self.models / version_name(version)

    def score_dir(self, version: int, day: str) -> Path:
        return self.root / "scores" / version_name(version) / f"day={day}"

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
            pl.scan_parquet(self.log_dir(day) / "*.parquet").with_columns(pl.lit(day).alias("day"))
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
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
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
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        return removed

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workspace's one lock; a second holder fails at once.

        `flock` is released by the kernel when its process dies, so a lock left by a killed run
        never blocks the next one. A workspace folder this lock had to create, and that holds
        nothing but the lock when it is released (a command refused for bad input), is removed
        again with every folder made for it: a refused command leaves no path behind.
        """
        created = self.missing_folders()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        with open(path, "a+") as handle:
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
                if created and [p.name for p in self.root.iterdir()] == [".lock"]:
                    path.unlink()
                    self.prune_empty(created)
                fcntl.flock(handle, fcntl.LOCK_UN)
