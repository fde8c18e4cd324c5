"""`reloop ingest`: raw click logs -> validated Parquet under logs/day=YYYY-MM-DD/.

Every row is checked against the spec; a file whose bad rows exceed `data.max_reject_fraction`
(0 by default) fails the whole ingest with the first bad row named, and nothing is written. Rows
that are refused within the allowance go to rejects/ with their reason.

Ingest is idempotent: each batch is keyed by the content of its files (and their partition
folders), and a key already in logs/_manifest/ is skipped.

Rows are dated by `timestamps.read_time` (any time type, in the workspace's `data.timezone`).
A row dated on or before the newest day the workspace held when the ingest began is late: with
`data.late_rows = "append"` (the default) it joins its day as a new part and is counted in the
batch's manifest and the result; with `"reject"` it goes to rejects/ with its reason.

Memory holds one batch at a time (a file, for logs with a time column): each validated batch is
written to a staging folder at once, and only when every batch has passed are the staged files
moved into place, so a month of backlog ingests in the memory of its largest file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import polars as pl
from joblib import Parallel, delayed

from reloop_cli.columns import (
    DAY,
    IMPRESSION_ID,
    LABEL,
    ORACLE,
    PROPENSITY,
    REJECT_REASON,
    REQUEST_ID,
    SERVED_PCTR,
    TS,
)
from reloop_cli.data import timestamps
from reloop_cli.data.inputs import InputFile, expand
from reloop_cli.data.manifest import file_digest, ingested_before
from reloop_cli.data.readers import ROW, read_raw
from reloop_cli.errors import BadInput
from reloop_cli.runtime import progress
from reloop_cli.runtime.faults import crash_point
from reloop_cli.spec.data import DataSpec
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.registry import now_utc
from reloop_cli.store.stored_spec import check_spec_fits, remember_spec
from reloop_cli.store.workspace import Workspace

RESERVED = (
    IMPRESSION_ID,
    LABEL,
    TS,
    SERVED_PCTR,
    ORACLE,
    REQUEST_ID,
    PROPENSITY,
    DAY,
    REJECT_REASON,
    ROW,
)


@dataclass
class IngestResult:
    """What one ingest call did; the CLI renders it."""

    rows: int = 0
    rejected: int = 0
    rows_per_day: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already ingested, nothing added
    late_rows: dict[str, int] = field(default_factory=dict)  # per day the workspace held already
    late_policy: str = "append"  # what happened to them: appended, or rejected
    time_notes: list[str] = field(default_factory=list)  # how the time column was read


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
        ("request id column", data.request_id),
        ("propensity column", data.propensity),
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


def _normalise(
    frame: pl.DataFrame, data: DataSpec, identity: str, today: date | None
) -> tuple[pl.DataFrame, str | None]:
    """Canonical columns (and `day`, for logs with a time column) plus a `reject_reason` that is
    null for a good row; and how the time column was read."""
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
            else pl.format(identity[:12] + ":{}", pl.col(ROW))
        ).alias(IMPRESSION_ID),
        label.cast(pl.Int8, strict=False).alias(LABEL),
        *[pl.col(c).cast(pl.String) for c in data.categorical],
        *[_as_float(c) for c in data.numeric],
        *[_as_value_list(c, frame.schema[c], data.multivalued_separator) for c in data.multivalued],
    ]
    note = None
    if data.time_column:
        frame, reading = timestamps.date_rows(frame, data, today)
        problem = pl.col(timestamps.PROBLEM)
        checks.append((problem.is_not_null(), problem))
        columns += [pl.col(timestamps.TS).alias(TS), pl.col(timestamps.DAY).alias(DAY)]
        note = f"time column '{data.time_column}': {reading}"
    if data.pctr:  # missing is allowed: traffic served without a model (ỹ_last: none)
        pctr = _as_float(data.pctr)
        given = pl.col(data.pctr).is_not_null()
        bad = given & ~pctr.is_between(0, 1).fill_null(False)
        checks.append((bad, pl.format("pctr '{}' not in [0, 1]", _shown(data.pctr))))
        columns.append(pctr.alias(SERVED_PCTR))
    if data.propensity:
        propensity = _as_float(data.propensity)
        bad = ~((propensity > 0) & (propensity <= 1)).fill_null(False)
        checks.append((bad, pl.format("propensity '{}' not in (0, 1]", _shown(data.propensity))))
        columns.append(propensity.alias(PROPENSITY))
    if data.request_id:
        checks.append((pl.col(data.request_id).is_null(), pl.lit("request id is empty")))
        columns.append(pl.col(data.request_id).cast(pl.String).alias(REQUEST_ID))
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
    return frame.select(pl.col(ROW), *columns, reason.alias(REJECT_REASON)), note


def _assign_days(frame: pl.DataFrame, data: DataSpec, days: int | None, start: str) -> pl.DataFrame:
    """Calendar day from the time column, or `days` pseudo-days in row order."""
    if data.time_column:
        return frame.with_columns(pl.col(DAY).fill_null("unknown"))
    n_days = days or 1
    first = date.fromisoformat(start)
    names = pl.Series(DAY, [(first + timedelta(days=i)).isoformat() for i in range(n_days)])
    position = pl.Series(range(frame.height), dtype=pl.Int64) * n_days // frame.height
    return frame.with_columns(names.gather(position))


def _check_rejects(path: Path, frame: pl.DataFrame, data: DataSpec) -> None:
    bad = frame.filter(pl.col(REJECT_REASON).is_not_null())
    if bad.height == 0:
        return
    allowed = data.max_reject_fraction * frame.height
    if data.max_reject_fraction == 0 or bad.height > allowed:
        first = bad.row(0, named=True)
        raise BadInput(
            f"{path}: row {first[ROW]}: {first[REJECT_REASON]} "
            f"({bad.height} bad of {frame.height} rows; data.max_reject_fraction="
            f"{data.max_reject_fraction})"
        )


def load_files(
    sources: list[InputFile | Path],
    spec: Spec,
    days: int | None,
    start: str,
    notes: list[str] | None = None,
    today: date | None = None,
) -> pl.DataFrame:
    """Read, validate and day-assign a batch of files; raises before anything is written. How
    the time column was read is appended to `notes`, once per distinct reading."""
    frames = []
    with progress.task("reading logs", len(sources)) as bar:
        for source in sources:
            source = source if isinstance(source, InputFile) else InputFile(Path(source))
            frame, note = _load_one(source, spec, today)
            if note and notes is not None and note not in notes:
                notes.append(note)
            frames.append(frame)
            bar.advance()
    batch = pl.concat(frames, how="vertical")
    return _assign_days(batch, spec.data, days, start)


def _load_one(source: InputFile, spec: Spec, today: date | None) -> tuple[pl.DataFrame, str | None]:
    """One file read, checked and normalised, with its source name."""
    path = source.path
    raw = read_raw(source, spec.data)
    _require_columns(path, raw.frame, spec.data)
    try:
        frame, note = _normalise(raw.frame, spec.data, source.identity(file_digest(path)), today)
    except pl.exceptions.PolarsError as err:
        reason = str(err).strip().splitlines()[0]
        raise BadInput(f"{path}: cannot read its columns with {spec.source}: {reason}") from None
    if raw.malformed.height:
        malformed = raw.malformed.rename({"reason": REJECT_REASON})
        frame = pl.concat([frame, malformed], how="diagonal").sort(ROW)
    _check_rejects(path, frame, spec.data)
    return frame.with_columns(pl.lit(str(path)).alias("_file")), note


@dataclass
class _StagedBatch:
    """A validated batch written under the staging folder, with where each file belongs."""

    key: str
    files: list[str]
    moves: list[tuple[Path, Path]]  # staged file -> its place in the workspace
    rows_per_day: dict[str, int]
    rows: int
    rejected: int
    late_rows: dict[str, int]
    notes: list[str]


def _late_rows(good: pl.DataFrame, newest: str | None) -> pl.Expr | None:
    """Rows dated on or before the newest day the workspace held when the ingest began."""
    if newest is None or DAY not in good.columns:
        return None
    return pl.col(DAY) <= newest


def _stage_batch(
    ws: Workspace,
    staging: Path,
    key: str,
    group: list[InputFile],
    spec: Spec,
    days: int | None,
    start: str,
    newest: str | None,
) -> _StagedBatch:
    """Read and validate one batch and write its day parts under `staging`; raises if bad."""
    notes: list[str] = []
    batch = load_files(group, spec, days, start, notes)
    good = batch.filter(pl.col(REJECT_REASON).is_null())
    bad = batch.filter(pl.col(REJECT_REASON).is_not_null())
    late_rows: dict[str, int] = {}
    is_late = _late_rows(good, newest) if spec.data.time_column else None
    if is_late is not None:
        late = good.filter(is_late)
        late_rows = dict(late.group_by(DAY).len().sort(DAY).iter_rows())
        if spec.data.late_rows == "reject" and late.height:
            reason = pl.format(
                'late: day {} was ingested before this file (data.late_rows = "reject")',
                pl.col(DAY),
            )
            bad = pl.concat([bad, late.with_columns(reason.alias(REJECT_REASON))], how="vertical")
            good = good.filter(~is_late)
    good = good.drop(REJECT_REASON, "_file", ROW)
    moves, rows_per_day = [], {}
    for (day,), part in good.partition_by(DAY, as_dict=True, maintain_order=True).items():
        staged = staging / key / f"logs-{day}.parquet"
        ws.write_parquet(part.drop(DAY), staged)
        moves.append((staged, ws.log_dir(day) / f"part-{key}.parquet"))
        rows_per_day[day] = part.height
    for (day,), part in bad.partition_by(DAY, as_dict=True, maintain_order=True).items():
        staged = staging / key / f"rejects-{day}.parquet"
        ws.write_parquet(part.rename({"_file": "source_file", ROW: "source_row"}), staged)
        moves.append((staged, ws.reject_dir(day) / f"part-{key}.parquet"))
    files = sorted(set(batch["_file"]))
    return _StagedBatch(key, files, moves, rows_per_day, good.height, bad.height, late_rows, notes)


def _commit_batch(ws: Workspace, batch: _StagedBatch, result: IngestResult) -> None:
    """Move a staged batch into place, then write its manifest (which marks it done)."""
    for staged, target in batch.moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    crash_point("ingest")  # day files in place, manifest not yet: a rerun rewrites the same files
    for day, rows in batch.rows_per_day.items():
        result.rows_per_day[day] = result.rows_per_day.get(day, 0) + rows
    for day, rows in batch.late_rows.items():
        result.late_rows[day] = result.late_rows.get(day, 0) + rows
    result.rows += batch.rows
    result.rejected += batch.rejected
    result.time_notes += [n for n in batch.notes if n not in result.time_notes]
    manifest = {
        "key": batch.key,
        "files": batch.files,
        "rows": batch.rows,
        "rejected": batch.rejected,
        "ingested_at": now_utc(),
        "late_rows": batch.late_rows,
        "late_policy": result.late_policy,
    }
    ws.write_json(manifest, ws.manifest_path(batch.key))


def _check_request(spec: Spec, days: int | None, start: str, jobs: int) -> None:
    if jobs < 1:
        raise BadInput(f"jobs: {jobs} must be >= 1")
    for name in (*spec.data.feature_fields,):
        if name in RESERVED:
            raise BadInput(f"{spec.source}: field name '{name}' is reserved; rename it in the spec")
    if days is not None and days < 1:
        raise BadInput(f"days: {days} must be >= 1")
    try:
        date.fromisoformat(start)
    except ValueError:
        raise BadInput(f"start_date: '{start}' is not a YYYY-MM-DD date") from None


def ingest(
    ws: Workspace,
    spec: Spec,
    files: list[str | Path | InputFile],
    *,
    days: int | None = None,
    start_date: str | None = None,
    jobs: int = 1,
) -> IngestResult:
    """Validate and write the given files (or every data file under given folders) into the
    workspace; call under the workspace lock.

    Logs with a time column are keyed file by file; logs without one are split, in the order
    given, into `days` consecutive pseudo-days from `start_date`, and keyed as one batch. With
    `jobs` > 1, batches are read and validated in parallel processes (joblib); what is written,
    and in which order, is the same as with one.
    """
    if not files:
        raise BadInput("ingest: no input files given")
    start = start_date or spec.data.start_date
    _check_request(spec, days, start, jobs)
    sources: list[InputFile] = []
    for given in files:
        sources += [given] if isinstance(given, InputFile) else expand([given])
    check_spec_fits(ws, spec)
    groups = [[s] for s in sources] if spec.data.time_column else [sources]
    result = IngestResult(files=[str(s.path) for s in sources], late_policy=spec.data.late_rows)
    pending = []
    for group in groups:
        key, done = ingested_before(ws, spec, group, days, start)
        if done:
            result.skipped.extend(str(s.path) for s in group)
            continue
        pending.append((key, group))
    if not pending:
        return result
    held = ws.days()
    newest = held[-1] if held else None
    created = ws.missing_folders(ws.logs)
    staging = ws.staging_dir(ws.logs)
    try:
        if jobs > 1 and len(pending) > 1:
            staged = Parallel(n_jobs=jobs)(
                delayed(_stage_batch)(ws, staging, key, group, spec, days, start, newest)
                for key, group in pending
            )
        else:
            staged = [
                _stage_batch(ws, staging, key, group, spec, days, start, newest)
                for key, group in pending
            ]
        for batch in staged:  # all files validated: only now touch the workspace
            _commit_batch(ws, batch, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        ws.prune_empty(created)  # a refused batch leaves no folder it made
    remember_spec(ws, spec)
    return result
