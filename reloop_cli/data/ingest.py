"""`reloop ingest`: raw click logs -> validated Parquet under logs/day=YYYY-MM-DD/.

Every row is checked against the spec; a file whose bad rows exceed `data.max_reject_fraction`
(0 by default) fails the whole ingest with the first bad row named, and nothing is written. Rows
that are refused within the allowance go to rejects/ with their reason.

Ingest is idempotent: each batch is keyed by the content of its files (and their partition
folders), and a key already in logs/_manifest/ is skipped; with `data.impression_id`, a row whose
id the day holds already is a duplicate (`duplicates.py`), so a re-exported day adds only its new
impressions. Categorical values are read in one canonical form per column (`column_types.py`).

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
from datetime import date
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
from reloop_cli.data import column_types
from reloop_cli.data.column_types import ColumnType
from reloop_cli.data.duplicates import drop_held, held_rows
from reloop_cli.data.inputs import InputFile, expand
from reloop_cli.data.manifest import file_digest, ingested_before
from reloop_cli.data.readers import ROW, read_raw
from reloop_cli.data.rows import assign_days, check_rejects, normalise, require_columns
from reloop_cli.errors import BadInput
from reloop_cli.runtime import progress
from reloop_cli.runtime.faults import crash_point
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
    duplicates: dict[str, int] = field(default_factory=dict)  # per day: impressions held already
    relabelled: dict[str, int] = field(default_factory=dict)  # of those, arriving with new labels


def load_files(
    sources: list[InputFile | Path],
    spec: Spec,
    days: int | None,
    start: str,
    notes: list[str] | None = None,
    today: date | None = None,
    forms: dict[str, ColumnType] | None = None,
) -> pl.DataFrame:
    """Read, validate and day-assign a batch of files; raises before anything is written. How
    the time column was read is appended to `notes`, once per distinct reading. `forms`: the
    recorded form of each categorical column, checked and updated file by file (None: not
    checked, as for the static protocol's files)."""
    frames = []
    with progress.task("reading logs", len(sources)) as bar:
        for source in sources:
            source = source if isinstance(source, InputFile) else InputFile(Path(source))
            frame, note = _load_one(source, spec, today, forms)
            if note and notes is not None and note not in notes:
                notes.append(note)
            frames.append(frame)
            bar.advance()
    batch = pl.concat(frames, how="vertical")
    return assign_days(batch, spec.data, days, start)


def _load_one(
    source: InputFile, spec: Spec, today: date | None, forms: dict[str, ColumnType] | None
) -> tuple[pl.DataFrame, str | None]:
    """One file read, checked and normalised, with its source name."""
    path = source.path
    raw = read_raw(source, spec.data)
    require_columns(path, raw.frame, spec.data)
    try:
        rows = normalise(raw.frame, spec.data, source.identity(file_digest(path)), today)
    except pl.exceptions.PolarsError as err:
        reason = str(err).strip().splitlines()[0]
        raise BadInput(f"{path}: cannot read its columns with {spec.source}: {reason}") from None
    if forms is not None:
        for column, seen in rows.forms.items():
            forms[column] = column_types.check_form(str(path), column, forms.get(column), seen)
    frame = rows.frame
    if raw.malformed.height:
        malformed = raw.malformed.rename({"reason": REJECT_REASON})
        frame = pl.concat([frame, malformed], how="diagonal").sort(ROW)
    check_rejects(path, frame, spec.data)
    return frame.with_columns(pl.lit(str(path)).alias("_file")), rows.time_note


@dataclass
class _StagedBatch:
    """A validated batch written under the staging folder: its good rows and its refused rows
    per day, and what it held (counts are final once `_settle` has run)."""

    key: str
    files: list[str]
    logs: dict[str, Path]  # day -> staged good rows
    rejects: dict[str, Path]  # day -> staged refused rows
    rows_per_day: dict[str, int]
    rejected: int
    late_rows: dict[str, int]
    notes: list[str]
    forms: dict[str, ColumnType]
    duplicates: dict[str, int] = field(default_factory=dict)
    relabelled: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.rows_per_day.values())


def _late_rows(good: pl.DataFrame, newest: str | None) -> pl.Expr | None:
    """Rows dated on or before the newest day the workspace held when the ingest began."""
    if newest is None or DAY not in good.columns:
        return None
    return pl.col(DAY) <= newest


def _by_day(frame: pl.DataFrame):
    """(day, its rows in file order) for each day, in order of first appearance; a filter per
    day measured 2.5x faster than `partition_by(maintain_order=True)` on 10M rows."""
    for day in frame.get_column(DAY).unique(maintain_order=True).to_list():
        yield day, frame.filter(pl.col(DAY) == day)


def _stage_batch(
    ws: Workspace,
    staging: Path,
    key: str,
    group: list[InputFile],
    spec: Spec,
    days: int | None,
    start: str,
    newest: str | None,
    forms: dict[str, ColumnType],
) -> _StagedBatch:
    """Read and validate one batch and write its day parts under `staging`; raises if bad."""
    notes: list[str] = []
    forms = dict(forms)
    batch = load_files(group, spec, days, start, notes, forms=forms)
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
    logs, rejects, rows_per_day = {}, {}, {}
    for day, part in _by_day(good):
        logs[day] = staging / key / f"logs-{day}.parquet"
        ws.write_parquet(part.drop(DAY), logs[day])
        rows_per_day[day] = part.height
    for day, part in _by_day(bad):
        rejects[day] = staging / key / f"rejects-{day}.parquet"
        ws.write_parquet(part.rename({"_file": "source_file", ROW: "source_row"}), rejects[day])
    files = sorted(set(batch["_file"]))
    return _StagedBatch(
        key, files, logs, rejects, rows_per_day, bad.height, late_rows, notes, forms
    )


def _settle(
    ws: Workspace, spec: Spec, staged: list[_StagedBatch], forms: dict[str, ColumnType]
) -> None:
    """Before anything moves: drop the impressions each day holds already (from earlier ingests
    or an earlier batch of this one), refusing them with `data.duplicate_impressions =
    "reject"`, and check that every batch's categorical columns keep their form."""
    added: dict[str, list[pl.DataFrame]] = {}  # day -> rows staged by earlier batches
    for batch in staged:
        for column, seen in batch.forms.items():
            forms[column] = column_types.check_form(
                ", ".join(batch.files), column, forms.get(column), seen
            )
        if not spec.data.impression_id:
            continue
        for day, path in batch.logs.items():
            held = pl.concat([held_rows(ws, day, f"part-{batch.key}.parquet"), *added.get(day, [])])
            found = drop_held(ws, path, held)
            if found.rows and spec.data.duplicate_impressions == "reject":
                raise BadInput(
                    f"{', '.join(batch.files)}: {found.rows:,} impression(s) of {day} the "
                    f"workspace holds already, e.g. '{found.example}' "
                    '(data.duplicate_impressions = "reject")'
                )
            if found.rows:
                batch.duplicates[day], batch.relabelled[day] = found.rows, found.relabelled
                batch.rows_per_day[day] -= found.rows
                if day in batch.late_rows:
                    batch.late_rows[day] -= found.rows
            added.setdefault(day, []).append(pl.read_parquet(path, columns=[IMPRESSION_ID, LABEL]))
        batch.late_rows = {day: n for day, n in batch.late_rows.items() if n}


def _commit_batch(ws: Workspace, batch: _StagedBatch, result: IngestResult) -> None:
    """Move a staged batch into place, then write its manifest (which marks it done)."""
    part = f"part-{batch.key}.parquet"
    # A day whose every row was held already gets no (empty) part.
    moves = [(p, ws.log_dir(d) / part) for d, p in batch.logs.items() if batch.rows_per_day[d]]
    moves += [(p, ws.reject_dir(d) / part) for d, p in batch.rejects.items()]
    for staged, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    crash_point("ingest")  # day files in place, manifest not yet: a rerun rewrites the same files
    for name in ("rows_per_day", "late_rows", "duplicates", "relabelled"):
        totals = getattr(result, name)
        for day, rows in getattr(batch, name).items():
            totals[day] = totals.get(day, 0) + rows
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
        "duplicates": batch.duplicates,
        "relabelled_duplicates": batch.relabelled,
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
    forms = column_types.load(ws)
    created = ws.missing_folders(ws.logs)
    staging = ws.staging_dir(ws.logs)
    try:
        stage = delayed(_stage_batch) if jobs > 1 and len(pending) > 1 else _stage_batch
        batches = [
            stage(ws, staging, k, group, spec, days, start, newest, forms) for k, group in pending
        ]
        staged = Parallel(n_jobs=jobs)(batches) if stage is not _stage_batch else batches
        _settle(ws, spec, staged, forms)
        for batch in staged:  # all files validated: only now touch the workspace
            _commit_batch(ws, batch, result)
        column_types.save(ws, forms)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        ws.prune_empty(created)  # a refused batch leaves no folder it made
    remember_spec(ws, spec)
    return result
