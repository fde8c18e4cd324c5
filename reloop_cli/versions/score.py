"""`reloop score`: a version predicts pCTR for a day's logs -> scores/vNNNN/day=D/ (what serving
would have logged). Scores are deterministic, so an existing file is reused."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
import torch
from joblib import Parallel, delayed

from reloop_cli.columns import IMPRESSION_ID, PCTR
from reloop_cli.errors import BadInput
from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import TensorTable, encode, to_tensors
from reloop_cli.models.base import CTRModel
from reloop_cli.runtime import progress
from reloop_cli.runtime.faults import crash_point
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import LoadedVersion, load_version

# Rows per forward pass when scoring. 4096 keeps a 400-wide layer's activations (6.5 MB) near
# the cache; 16384 measured slower on the 2-core machine (docs/BENCHMARKS.md).
SCORE_BATCH = 4096


@dataclass
class ScoreResult:
    version: int
    day: str
    rows: int
    path: str
    reused: bool

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def predict(
    model: CTRModel, categorical: torch.Tensor, dense: torch.Tensor, batch: int = SCORE_BATCH
) -> np.ndarray:
    """Click probabilities for encoded rows, in batches, model in eval mode."""
    model.eval()
    out = [
        torch.sigmoid(model(categorical[i : i + batch], dense[i : i + batch]))
        for i in range(0, categorical.shape[0], batch)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def encode_for(
    loaded: LoadedVersion, ws: Workspace, rows: pl.LazyFrame
) -> tuple[pl.DataFrame, TensorTable]:
    """Raw log rows encoded with the vocabulary as it was when the version trained (a value
    evicted since, or newer, falls to the out-of-vocabulary row): the frame and its tensors."""
    view = vocabulary.for_version(ws, loaded.meta)
    encoded = encode(rows, loaded.spec, view, loaded.meta["field_sizes"]).collect()
    return encoded, to_tensors(encoded, loaded.spec)


def predict_frame(loaded: LoadedVersion, ws: Workspace, rows: pl.LazyFrame) -> pl.DataFrame:
    """impression_id and pctr for raw log rows, as the version scores them (`encode_for`)."""
    encoded, table = encode_for(loaded, ws, rows)
    pctr = predict(loaded.model, table.categorical, table.dense)
    return pl.DataFrame({IMPRESSION_ID: encoded[IMPRESSION_ID], PCTR: pctr})


def non_finite(scores: pl.DataFrame) -> int:
    """How many of a frame's predictions are NaN or infinite (a broken version's)."""
    return int((~np.isfinite(scores[PCTR].to_numpy())).sum())


def score_day(
    ws: Workspace,
    version: int,
    day: str,
    *,
    loaded: LoadedVersion | None = None,
    force: bool = False,
) -> ScoreResult:
    """Score one day with one version; call under the workspace lock."""
    ws.require_day(day)
    path = ws.score_dir(version, day) / "part-0.parquet"
    if path.exists() and not force:
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        return ScoreResult(version, day, rows, str(path), reused=True)
    loaded = loaded or load_version(ws, version)
    scores = predict_frame(loaded, ws, ws.scan_logs([day]))
    broken = non_finite(scores)
    if broken:
        raise BadInput(
            f"v{version} predicts a non-finite pCTR for {broken:,} of {scores.height:,} rows of "
            f"{day}; refusing to write them (they would be tomorrow's ỹ_last): retrain it"
        )
    crash_point("score")
    ws.write_parquet(scores, path)
    return ScoreResult(version, day, scores.height, str(path), reused=False)


def score_days(
    ws: Workspace, version: int, days: list[str], *, jobs: int = 1, force: bool = False
) -> list[ScoreResult]:
    """Score several days, one process per day partition with `jobs` > 1 (joblib); each day's
    file is written atomically by its worker, so the output equals a serial run's."""
    for day in days:
        ws.require_day(day)
    if jobs == 1 or len(days) < 2:
        loaded = load_version(ws, version)
        results = []
        with progress.task(f"scoring with v{version}", len(days)) as bar:
            for day in days:
                results.append(score_day(ws, version, day, loaded=loaded, force=force))
                bar.advance()
        return results
    return Parallel(n_jobs=jobs)(
        delayed(_score_in_worker)(str(ws.root), version, day, force) for day in days
    )


def _score_in_worker(root: str, version: int, day: str, force: bool) -> ScoreResult:
    torch.set_num_threads(1)  # the processes share the cores
    return score_day(Workspace(root), version, day, force=force)
