"""`reloop train`: version t on the last W days, learning from version t-1's predictions.

One lazy Polars query builds the training rows: the window's logs, left-joined on impression id
with the parent's scores (ỹ_last). A left join onto unique ids keeps every row exactly once; rows
the parent never scored get NaN and fall back to BCE in the loss, and are counted in the version's
metadata. The first version of a chain has no parent and trains with BCE.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import torch

from reloop_cli.columns import IMPRESSION_ID, LABEL, MAIN_CHAIN, Y_LAST
from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import encode
from reloop_cli.features.hashing import SPLIT_METHOD, bucket_of
from reloop_cli.models import build_model
from reloop_cli.models.base import CTRModel
from reloop_cli.spec.layout import categorical_fields, dense_fields, field_slots
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.registry import Registry, VersionStatus, now_utc
from reloop_cli.store.workspace import Workspace
from reloop_cli.training import distributed
from reloop_cli.training.environment import environment
from reloop_cli.training.fitting import FitResult, fit, resolve_device
from reloop_cli.training.loader import ParquetBatches
from reloop_cli.training.warm_start import WarmStart, warm_start
from reloop_cli.training.window import training_rows, window_for
from reloop_cli.versions.checkpoint import publish_version


@dataclass
class TrainResult:
    """What a training run produced; also the core of the version's meta.json."""

    version: int
    chain: str
    parent: int | None
    day: str
    window: list[str]
    loss: str
    alpha: float
    seed: int
    warm_start: bool
    rows: int
    rows_without_last: int | None
    history: list[dict] = field(default_factory=list)  # per epoch: loss, validation metrics, lr
    best_epoch: int = 0
    seconds: float = 0.0
    started: WarmStart | None = None  # how the weights began: from the parent, or fresh

    def to_dict(self) -> dict:
        return asdict(self)


def split_to_parquet(
    encoded: pl.LazyFrame, spec: Spec, folder: Path, y_last_column: str | None
) -> tuple[ParquetBatches, ParquetBatches | None]:
    """Stream the encoded window to train.parquet and (a seeded hash slice) valid.parquet; under
    torchrun, only this rank's shard (row i goes to rank i mod world size)."""
    if distributed.is_distributed():
        position = pl.int_range(pl.len(), dtype=pl.Int64)
        encoded = encoded.filter(position % distributed.world_size() == distributed.rank())
    fraction = spec.train.validation_fraction
    if fraction == 0:
        return ParquetBatches.write(encoded, folder / "train.parquet", spec, y_last_column), None
    bucket = bucket_of(IMPRESSION_ID, spec.train.seed)
    is_valid = bucket < round(fraction * 10_000)
    train = ParquetBatches.write(
        encoded.filter(~is_valid), folder / "train.parquet", spec, y_last_column
    )
    valid = ParquetBatches.write(
        encoded.filter(is_valid), folder / "valid.parquet", spec, y_last_column
    )
    return train, valid if distributed.total(len(valid)) else None


def count_without_last(folder: Path, y_last_column: str | None) -> int | None:
    """Rows of the window whose parent prediction is missing (they trained with plain BCE)."""
    if y_last_column is None:
        return None
    files = sorted(folder.glob("*.parquet"))
    return int(
        pl.scan_parquet(files).select(pl.col(y_last_column).is_null().sum()).collect().item()
    )


def _oldest_live_generation(registry: Registry, scope: str) -> int | None:
    """The oldest vocabulary generation a live version of this scope encodes with: closed
    assignments older than it are needed by no live version."""
    generations = [
        v["meta"].get("vocab_generation", 0)
        for v in registry.versions()
        if v["status"] == VersionStatus.LIVE
        and v["meta"].get("vocab_scope", vocabulary.MAIN_SCOPE) == scope
    ]
    return min(generations) if generations else None


@dataclass(frozen=True)
class Lineage:
    """Where a new version goes: the chain it extends, its parent (None: the chain's live
    version, unless `use_live_parent` is off, as for a chain's first version), whether it goes
    live at once, and the vocabulary scope whose values it learns."""

    chain: str = MAIN_CHAIN
    parent: int | None = None
    use_live_parent: bool = True
    promote: bool = True
    vocab_scope: str = vocabulary.MAIN_SCOPE
    # What kind of update this is, kept in the version's meta: None for a version trained on
    # its window; {"kind": "incremental", ...} for `reloop run --incremental`'s passes.
    update: dict | None = None


@dataclass
class _Prepared:
    """A version's inputs before fitting: its parent and loss, the window, the encoded rows and
    the vocabulary they were encoded with."""

    parent: int | None
    loss: str
    window: list[str]
    encoded: pl.LazyFrame
    refreshed: vocabulary.Refreshed
    y_last_column: str | None


def train_version(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    day: str,
    lineage: Lineage = Lineage(),
    *,
    exclude: pl.Expr | None = None,
) -> TrainResult:
    """Train, publish and (by default) make live the next version of a chain; call under lock.

    Rows matching `exclude` (evaluated on the window's rows, which carry a `day` column) are kept
    out of training entirely. The window's values update the lineage's vocabulary scope first.
    """
    clock = time.perf_counter()
    resolve_device(spec.train.device)  # fail before anything is written
    prepared = _prepare(ws, registry, spec, day, lineage, exclude)
    torch.manual_seed(spec.train.seed)
    sizes = prepared.refreshed.sizes
    model = build_model(spec.model, sizes, len(dense_fields(spec)), field_slots(spec))
    started = WarmStart(prepared.parent, "none")
    if spec.train.warm_start and prepared.parent is not None:
        started = warm_start(model, ws, prepared.parent, spec, prepared.refreshed)
    # Rank 0 stages the version inside the workspace; other ranks keep their shards elsewhere.
    main = distributed.is_main()
    staging = ws.staging_dir(ws.models) if main else Path(tempfile.mkdtemp(prefix="reloop-"))
    try:
        result, fitted = _fit(model, spec, prepared, staging)
        result.chain, result.day = lineage.chain, day
        result.warm_start, result.started = started.warm, started
        result.seconds = round(time.perf_counter() - clock, 3)
        if main:
            meta = _meta(result, spec, prepared, sparse=fitted.sparse, scope=lineage.vocab_scope)
            if lineage.update is not None:
                meta["update"] = dict(lineage.update)
            result.version = publish_version(ws, registry, model, meta, staging)
            if lineage.promote:
                registry.set_live(lineage.chain, result.version)
        result.version = distributed.from_main(result.version)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return result


def _prepare(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    day: str,
    lineage: Lineage,
    exclude: pl.Expr | None,
) -> _Prepared:
    """The parent, the window's rows with ỹ_last, the vocabulary refreshed by them, and the rows
    encoded with it (lazily)."""
    parent = lineage.parent
    if parent is None and lineage.use_live_parent:
        parent = registry.live(lineage.chain)
    loss = spec.train.loss if parent is not None else "bce"
    window = window_for(ws, day, spec.train.window_days)
    rows = training_rows(ws, registry, spec, window, parent, loss, lineage.chain)
    logs = ws.scan_logs(window)  # the vocabulary needs raw values only, not the ỹ_last join
    if exclude is not None:  # e.g. the newest day's holdout slice that judges this version
        rows, logs = rows.filter(~exclude), logs.filter(~exclude)
    refreshed = vocabulary.refresh(
        ws,
        spec,
        logs,
        day,
        scope=lineage.vocab_scope,
        keep_from=_oldest_live_generation(registry, lineage.vocab_scope),
        save=distributed.is_main(),
    )
    y_last_column = Y_LAST if loss != "bce" else None
    columns = [*categorical_fields(spec), *dense_fields(spec), LABEL, IMPRESSION_ID]
    encoded = encode(rows, spec, refreshed.view, refreshed.sizes).select(
        *columns, *([y_last_column] if y_last_column else [])
    )
    return _Prepared(parent, loss, window, encoded, refreshed, y_last_column)


def _fit(
    model: CTRModel, spec: Spec, prepared: _Prepared, staging: Path
) -> tuple[TrainResult, FitResult]:
    """Stream the encoded rows to `staging`, fit the model on them, and count what it saw."""
    train_data, valid_data = split_to_parquet(
        prepared.encoded, spec, staging, prepared.y_last_column
    )
    seed = spec.train.seed
    fitted = fit(model, train_data, valid_data, spec.train, prepared.loss, spec.train.alpha, seed)
    without_last = count_without_last(staging, prepared.y_last_column)
    if without_last is not None:
        without_last = distributed.total(without_last)
    rows = distributed.total(len(train_data) + (len(valid_data) if valid_data else 0))
    for path in staging.glob("*.parquet"):
        path.unlink()
    result = TrainResult(
        version=0,
        chain="",
        parent=prepared.parent,
        day="",
        window=prepared.window,
        loss=prepared.loss,
        alpha=spec.train.alpha,
        seed=seed,
        warm_start=False,
        rows=rows,
        rows_without_last=without_last,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
    )
    return result, fitted


def _meta(result: TrainResult, spec: Spec, prepared: _Prepared, sparse: bool, scope: str) -> dict:
    """The version's meta.json: its lineage and training record, the vocabulary it encodes
    with, the spec it was trained under, and where it ran."""
    return {
        **result.to_dict(),
        "created": now_utc(),
        "field_sizes": prepared.refreshed.sizes,
        "embedding_updates": "sparse" if sparse else "dense",
        "vocab_scope": scope,
        "vocab_generation": prepared.refreshed.generation,
        "vocabulary": prepared.refreshed.report()["fields"],
        "n_dense": len(dense_fields(spec)),
        # how the validation slice was drawn: the same rows in every release (features/hashing)
        "splits": {"method": SPLIT_METHOD, "validation_seed": spec.train.seed},
        "spec": spec.to_dict(),
        "environment": environment(),
    }
