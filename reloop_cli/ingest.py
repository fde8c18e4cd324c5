"""`reloop ingest`: raw click logs -> validated Parquet under logs/day=YYYY-MM-DD/.

Every row is checked against the spec; a file whose bad rows exceed `data.max_reject_fraction`
(0 by default) fails the whole ingest with the first bad row named, and nothing is written. Rows
that are refused within the allowance go to rejects/ with their reason.

Ingest is idempotent: each batch is keyed by the content of its files (and the spec's data
section), and a key already in logs/_manifest/ is skipped.

Memory holds one batch at a time (a file, for logs with a time column): each validated batch is
written to a staging folder at once, and only when every batch has passed are the staged files
moved into place, so a month of backlog ingests in the memory of its largest file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from reloop_cli import progress
from reloop_cli.errors import BadInput
from reloop_cli.faults import crash_point
from reloop_cli.readers import ROW, read_raw
from reloop_cli.spec import DataSpec, Spec
from reloop_cli.workspace import Workspace

# Canonical column names in logs/ (features keep the spec's names).
IMPRESSION_ID = "impression_id"
LABEL = "label"
TS = "ts"
SERVED_PCTR = "served_pctr"
ORACLE = "oracle_ctr"
REASON = "reject_reason"
RESERVED = (IMPRESSION_ID, LABEL, TS, SERVED_PCTR, ORACLE, "day", REASON, ROW)


@dataclass
class IngestResult:
    """What one ingest call did; the CLI renders it."""

    rows: int = 0
    rejected: int = 0
    rows_per_day: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already ingested, nothing added


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _require_columns(path: Path, frame: pl.DataFrame, data: DataSpec) -> None:
    wanted = [("label", data.label)]
    wanted += [("categorical field", c) for c in data.categorical]
    wanted += [("numeric field", c) for c in data.numeric]
    wanted += [("multivalued field", c) for c in data.multivalued]
    for role, column in (
        ("time column", data.time_column),
        ("impression id column", data.impression_id),
        ("pctr column", data.pctr),
        ("oracle column", data.oracle),
    ):
        if column:
            wanted.append((role, column))
    for role, column in wanted:
        if column not in frame.columns:
            shown = ", ".join(c for c in frame.columns if c != ROW)
            raise BadInput(f"{path}: missing {role} '{column}' (columns: {shown})")


def _shown(column: str) -> pl.Expr:
    """A raw value as it reads in an error message (a null would blank the whole message)."""
    return pl.col(column).cast(pl.String).fill_null("(empty)")


def _as_float(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64, strict=False)


def _as_value_list(column: str, dtype: pl.DataType, separator: str) -> pl.Expr:
    """A multivalued field as a list of strings: a list column's items, or a string split at
    `separator`; blanks are dropped and a null becomes the empty list."""
    if isinstance(dtype, (pl.List, pl.Array)):
        values = pl.col(column).cast(pl.List(pl.String))
    else:
        values = pl.col(column).cast(pl.String).str.split(separator)
    item = pl.element().str.strip_chars()
    return values.list.eval(item.filter(item != "")).fill_null([])


def _time_expr(data: DataSpec) -> pl.Expr:
    raw = pl.col(data.time_column)
    if data.time_format:
        text, fmt = raw.cast(pl.String), data.time_format
        if "%H" in fmt and "%M" not in fmt:  # Polars parses an hour only with its minutes
            text, fmt = text + "00", fmt + "%M"
        parsed = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
        return parsed.dt.epoch("s")
    return raw.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)


def _normalise(path: Path, frame: pl.DataFrame, data: DataSpec, digest: str) -> pl.DataFrame:
    """Canonical columns plus a `reject_reason` that is null for a good row."""
    label = _as_float(data.label)
    checks: list[tuple[pl.Expr, pl.Expr]] = [
        (
            ~label.is_in([0.0, 1.0]).fill_null(False),
            pl.format("label '{}' is not 0 or 1", _shown(data.label)),
        )
    ]
    for column in data.numeric:
        bad = pl.col(column).is_not_null() & _as_float(column).is_null()
        checks.append((bad, pl.format("numeric field '" + column + "' = '{}'", _shown(column))))
    columns = [
        (
            pl.col(data.impression_id).cast(pl.String)
            if data.impression_id
            else pl.format(digest[:12] + ":{}", pl.col(ROW))
        ).alias(IMPRESSION_ID),
        label.cast(pl.Int8, strict=False).alias(LABEL),
        *[pl.col(c).cast(pl.String) for c in data.categorical],
        *[_as_float(c) for c in data.numeric],
        *[_as_value_list(c, frame.schema[c], data.multivalued_separator) for c in data.multivalued],
    ]
    if data.time_column:
        ts = _time_expr(data)
        checks.append(
            (ts.is_null(), pl.format("time '{}' not parseable", _shown(data.time_column)))
        )
        columns.append(ts.alias(TS))
    if data.pctr:
        pctr = _as_float(data.pctr)
        checks.append((~pctr.is_between(0, 1).fill_null(False), pl.lit("pctr not in [0, 1]")))
        columns.append(pctr.alias(SERVED_PCTR))
    if data.oracle:
        columns.append(_as_float(data.oracle).alias(ORACLE))
    if data.impression_id:
        checks.append((pl.col(data.impression_id).is_null(), pl.lit("impression id is empty")))
        checks.append(
            (pl.col(data.impression_id).is_duplicated(), pl.lit("impression id is duplicated"))
        )
    reason = pl.lit(None, dtype=pl.String)
    for bad, text in reversed(checks):
        reason = pl.when(bad).then(text).otherwise(reason)
    return frame.select(pl.col(ROW), *columns, reason.alias(REASON))


def _assign_days(frame: pl.DataFrame, data: DataSpec, days: int | None, start: str) -> pl.DataFrame:
    """Calendar day from the time column, or `days` pseudo-days in row order."""
    if data.time_column:
        day = pl.from_epoch(pl.col(TS), time_unit="s").dt.date().cast(pl.String)
        return frame.with_columns(day.fill_null("unknown").alias("day"))
    n_days = days or 1
    first = date.fromisoformat(start)
    names = pl.Series("day", [(first + timedelta(days=i)).isoformat() for i in range(n_days)])
    position = pl.Series(range(frame.height), dtype=pl.Int64) * n_days // frame.height
    return frame.with_columns(names.gather(position))


def _check_rejects(path: Path, frame: pl.DataFrame, data: DataSpec) -> None:
    bad = frame.filter(pl.col(REASON).is_not_null())
    if bad.height == 0:
        return
    allowed = data.max_reject_fraction * frame.height
    if data.max_reject_fraction == 0 or bad.height > allowed:
        first = bad.row(0, named=True)
        raise BadInput(
            f"{path}: row {first[ROW]}: {first[REASON]} "
            f"({bad.height} bad of {frame.height} rows; data.max_reject_fraction="
            f"{data.max_reject_fraction})"
        )


def _batch_key(digests: list[str], spec: Spec, days: int | None, start: str) -> str:
    payload = json.dumps([digests, spec.to_dict()["data"], days, start], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def manifest_path(ws: Workspace, key: str) -> Path:
    return ws.logs / "_manifest" / f"{key}.json"


def is_ingested(ws: Workspace, spec: Spec, path: Path) -> bool:
    """Whether this file (with a time column, keyed on its own) is in the workspace already."""
    return manifest_path(
        ws, _batch_key([file_digest(path)], spec, None, spec.data.start_date)
    ).exists()


def load_files(paths: list[Path], spec: Spec, days: int | None, start: str) -> pl.DataFrame:
    """Read, validate and day-assign a batch of files; raises before anything is written."""
    frames = []
    with progress.task("reading logs", len(paths)) as bar:
        for path in paths:
            frames.append(_load_one(path, spec))
            bar.advance()
    batch = pl.concat(frames, how="vertical")
    return _assign_days(batch, spec.data, days, start)


def _load_one(path: Path, spec: Spec) -> pl.DataFrame:
    """One file read, checked and normalised, with its source name."""
    raw = read_raw(path, spec.data)
    _require_columns(path, raw, spec.data)
    try:
        frame = _normalise(path, raw, spec.data, file_digest(path))
    except pl.exceptions.PolarsError as err:
        reason = str(err).strip().splitlines()[0]
        raise BadInput(f"{path}: cannot read its columns with {spec.source}: {reason}") from None
    _check_rejects(path, frame, spec.data)
    return frame.with_columns(pl.lit(str(path)).alias("_file"))


@dataclass
class _StagedBatch:
    """A validated batch written under the staging folder, with where each file belongs."""

    key: str
    files: list[str]
    moves: list[tuple[Path, Path]]  # staged file -> its place in the workspace
    rows_per_day: dict[str, int]
    rows: int
    rejected: int


def _stage_batch(
    ws: Workspace,
    staging: Path,
    key: str,
    group: list[Path],
    spec: Spec,
    days: int | None,
    start: str,
) -> _StagedBatch:
    """Read and validate one batch and write its day parts under `staging`; raises if bad."""
    batch = load_files(group, spec, days, start)
    good = batch.filter(pl.col(REASON).is_null()).drop(REASON, "_file", ROW)
    bad = batch.filter(pl.col(REASON).is_not_null())
    moves, rows_per_day = [], {}
    for (day,), part in good.partition_by("day", as_dict=True, maintain_order=True).items():
        staged = staging / key / f"logs-{day}.parquet"
        ws.write_parquet(part.drop("day"), staged)
        moves.append((staged, ws.log_dir(day) / f"part-{key}.parquet"))
        rows_per_day[day] = part.height
    for (day,), part in bad.partition_by("day", as_dict=True, maintain_order=True).items():
        staged = staging / key / f"rejects-{day}.parquet"
        ws.write_parquet(part.rename({"_file": "source_file", ROW: "source_row"}), staged)
        moves.append((staged, ws.rejects / f"day={day}" / f"part-{key}.parquet"))
    files = sorted(set(batch["_file"]))
    return _StagedBatch(key, files, moves, rows_per_day, good.height, bad.height)


def _commit_batch(ws: Workspace, batch: _StagedBatch, result: IngestResult) -> None:
    """Move a staged batch into place, then write its manifest (which marks it done)."""
    for staged, target in batch.moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    crash_point("ingest")  # day files in place, manifest not yet: a rerun rewrites the same files
    for day, rows in batch.rows_per_day.items():
        result.rows_per_day[day] = result.rows_per_day.get(day, 0) + rows
    result.rows += batch.rows
    result.rejected += batch.rejected
    manifest = {
        "key": batch.key,
        "files": batch.files,
        "rows": batch.rows,
        "rejected": batch.rejected,
    }
    ws.write_json(manifest, manifest_path(ws, batch.key))


def ingest(
    ws: Workspace,
    spec: Spec,
    files: list[str | Path],
    *,
    days: int | None = None,
    start_date: str | None = None,
    jobs: int = 1,
) -> IngestResult:
    """Validate and write the given files into the workspace; call under the workspace lock.

    Logs with a time column are keyed file by file; logs without one are split, in the order
    given, into `days` consecutive pseudo-days from `start_date`, and keyed as one batch. With
    `jobs` > 1, batches are read and validated in parallel processes (joblib); what is written,
    and in which order, is the same as with one.
    """
    if jobs < 1:
        raise BadInput(f"--jobs: {jobs} must be >= 1")
    if not files:
        raise BadInput("ingest: no input files given")
    for name in (*spec.data.feature_fields,):
        if name in RESERVED:
            raise BadInput(f"{spec.source}: field name '{name}' is reserved; rename it in the spec")
    if days is not None and days < 1:
        raise BadInput(f"--days: {days} must be >= 1")
    start = start_date or spec.data.start_date
    try:
        date.fromisoformat(start)
    except ValueError:
        raise BadInput(f"--start-date: '{start}' is not a YYYY-MM-DD date") from None
    paths = [Path(f) for f in files]
    groups = [[p] for p in paths] if spec.data.time_column else [paths]
    result = IngestResult(files=[str(p) for p in paths])
    pending = []
    for group in groups:
        for path in group:
            if not path.is_file():
                raise BadInput(f"{path}: file not found")
        key = _batch_key([file_digest(p) for p in group], spec, days, start)
        if manifest_path(ws, key).exists():
            result.skipped.extend(str(p) for p in group)
            continue
        pending.append((key, group))
    if not pending:
        return result
    staging = ws.staging_dir(ws.logs)
    try:
        if jobs > 1 and len(pending) > 1:
            from joblib import Parallel, delayed

            staged = Parallel(n_jobs=jobs)(
                delayed(_stage_batch)(ws, staging, key, group, spec, days, start)
                for key, group in pending
            )
        else:
            staged = [
                _stage_batch(ws, staging, key, group, spec, days, start) for key, group in pending
            ]
        for batch in staged:  # all files validated: only now touch the workspace
            _commit_batch(ws, batch, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
