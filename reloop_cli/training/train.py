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
from reloop_cli.errors import BadInput
from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import encode
from reloop_cli.models import build_model
from reloop_cli.models.base import CTRModel
from reloop_cli.spec.layout import categorical_fields, dense_fields, field_slots
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.registry import Registry, now_utc
from reloop_cli.store.workspace import Workspace
from reloop_cli.training import distributed
from reloop_cli.training.environment import environment
from reloop_cli.training.fitting import fit, resolve_device
from reloop_cli.training.loader import ParquetBatches
from reloop_cli.training.window import training_rows, window_for
from reloop_cli.versions.checkpoint import load_version, publish_version


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
    bucket = pl.col(IMPRESSION_ID).hash(spec.train.seed) % 10_000
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


def _warm_start(
    model: CTRModel, ws: Workspace, parent: int, spec: Spec, refreshed: vocabulary.Refreshed
) -> None:
    """Start from the parent's weights. Embedding rows follow values, not row numbers: a value
    both versions hold keeps the parent's vector; a new value, or one given a row an evicted
    value freed, keeps its fresh one. The parent's view comes from the vocabulary just
    refreshed when it shares the scope (the same table the file holds, not read again)."""
    view, sizes = refreshed.view, refreshed.sizes
    parent_model = load_version(ws, parent)
    parent_state = parent_model.model.state_dict()
    parent_sizes = parent_model.meta["field_sizes"]
    own = model.state_dict()
    if set(parent_state) != set(own):
        raise BadInput(f"version {parent}: a different model; cannot warm-start from it")
    parent_view = vocabulary.for_version(ws, parent_model.meta, {refreshed.scope: refreshed.vocab})
    pairs = vocabulary.kept_rows(spec, parent_view, view, parent_sizes, sizes)
    for name, module in model.named_modules():
        if hasattr(module, "copy_rows"):
            module.copy_rows(parent_state[f"{name}.table.weight"], parent_sizes, pairs)
    with torch.no_grad():
        for name, tensor in own.items():
            if ".table.weight" not in name and parent_state[name].shape == tensor.shape:
                tensor.copy_(parent_state[name])


def _oldest_live_generation(registry: Registry, scope: str) -> int | None:
    """The oldest vocabulary generation a live version of this scope encodes with: closed
    assignments older than it are needed by no live version."""
    generations = [
        v["meta"].get("vocab_generation", 0)
        for v in registry.versions()
        if v["status"] == "live" and v["meta"].get("vocab_scope", vocabulary.MAIN_SCOPE) == scope
    ]
    return min(generations) if generations else None


def train_version(
    ws: Workspace,
    registry: Registry,
    spec: Spec,
    day: str,
    *,
    chain: str = MAIN_CHAIN,
    parent: int | None = None,
    use_live_parent: bool = True,
    promote: bool = True,
    exclude: pl.Expr | None = None,
    vocab_scope: str = vocabulary.MAIN_SCOPE,
) -> TrainResult:
    """Train, publish and (by default) make live the next version of `chain`; call under lock.

    Rows matching `exclude` (evaluated on the window's rows, which carry a `day` column) are kept
    out of training entirely. The window's values update the vocabulary of `vocab_scope` first.
    """
    started = time.perf_counter()
    resolve_device(spec.train.device)  # fail before anything is written
    if parent is None and use_live_parent:
        parent = registry.live(chain)
    loss = spec.train.loss if parent is not None else "bce"
    window = window_for(ws, day, spec.train.window_days)
    rows = training_rows(ws, registry, spec, window, parent, loss, chain)
    logs = ws.scan_logs(window)  # the vocabulary needs raw values only, not the ỹ_last join
    if exclude is not None:  # e.g. the newest day's holdout slice that judges this version
        rows, logs = rows.filter(~exclude), logs.filter(~exclude)
    refreshed = vocabulary.refresh(
        ws,
        spec,
        logs,
        day,
        scope=vocab_scope,
        keep_from=_oldest_live_generation(registry, vocab_scope),
        save=distributed.is_main(),
    )
    vocab, sizes = refreshed.view, refreshed.sizes
    y_last_column = Y_LAST if loss != "bce" else None
    columns = [*categorical_fields(spec), *dense_fields(spec), LABEL, IMPRESSION_ID]
    encoded = encode(rows, spec, vocab, sizes).select(
        *columns, *([y_last_column] if y_last_column else [])
    )

    seed = spec.train.seed
    torch.manual_seed(seed)
    model = build_model(spec.model, sizes, len(dense_fields(spec)), field_slots(spec))
    warm = spec.train.warm_start and parent is not None
    if warm:
        _warm_start(model, ws, parent, spec, refreshed)
    # Rank 0 stages the version inside the workspace; other ranks keep their shards elsewhere.
    main = distributed.is_main()
    staging = ws.staging_dir(ws.models) if main else Path(tempfile.mkdtemp(prefix="reloop-"))
    try:
        train_data, valid_data = split_to_parquet(encoded, spec, staging, y_last_column)
        fitted = fit(model, train_data, valid_data, spec.train, loss, spec.train.alpha, seed)
        without_last = count_without_last(staging, y_last_column)
        if without_last is not None:
            without_last = distributed.total(without_last)
        rows = distributed.total(len(train_data) + (len(valid_data) if valid_data else 0))
        for path in staging.glob("*.parquet"):
            path.unlink()

        result = TrainResult(
            version=0,
            chain=chain,
            parent=parent,
            day=day,
            window=window,
            loss=loss,
            alpha=spec.train.alpha,
            seed=seed,
            warm_start=warm,
            rows=rows,
            rows_without_last=without_last,
            history=fitted.history,
            best_epoch=fitted.best_epoch,
            seconds=round(time.perf_counter() - started, 3),
        )
        meta = {
            **result.to_dict(),
            "created": now_utc(),
            "field_sizes": sizes,
            "embedding_updates": "sparse" if fitted.sparse else "dense",
            "vocab_scope": vocab_scope,
            "vocab_generation": refreshed.generation,
            "vocabulary": refreshed.report()["fields"],
            "n_dense": len(dense_fields(spec)),
            "spec": spec.to_dict(),
            "environment": environment(),
        }
        if main:
            result.version = publish_version(ws, registry, model, meta, staging)
            if promote:
                registry.set_live(chain, result.version)
        result.version = distributed.from_main(result.version)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return result
