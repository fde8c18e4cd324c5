"""The optimisation loop shared by daily training and the paper's static protocol.

Adam over shuffled batches (row-wise Adam on the embedding rows a batch touches, for large tables:
`optimizers.py`); after each epoch the validation slice is scored and the monitored metric
decides: better -> remember these weights; not better -> multiply the learning rate by
`plateau_factor` (reduce-on-plateau) and, after `patience` such epochs, stop. The best epoch's
weights are restored at the end (FuxiCTR's schedule, without its fixed checkpoint path).

The embedding regulariser, lambda/2 * ||e||^2, applies to the rows a batch touches, each weighted
by how rarely batches touch it, or to every row every step (`regulariser.py` says why).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch.distributed.algorithms import Join

from reloop_cli.errors import BadInput, TrainingFailed
from reloop_cli.evaluation.metrics import auc, logloss
from reloop_cli.models.base import CTRModel
from reloop_cli.runtime import progress
from reloop_cli.runtime.faults import crash_point
from reloop_cli.spec.sections import TrainSpec
from reloop_cli.training import distributed
from reloop_cli.training.losses import training_loss
from reloop_cli.training.optimizers import Optimizer, table_modules, wants_sparse
from reloop_cli.training.regulariser import batch_aware_weights, embedding_penalty
from reloop_cli.training.sparse_sync import TableGradients, exclude_from_ddp

# Steps between checks that the running loss is still finite (a check costs a device sync).
FINITE_CHECK_STEPS = 100


class Batches(Protocol):
    def batches(self, batch_size: int, generator: torch.Generator | None = None): ...


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # per epoch: loss, validation metrics, lr
    best_epoch: int = 0
    stopped_early: bool = False
    sparse: bool = False  # whether the embedding tables learned by sparse updates

    @property
    def best(self) -> dict:
        return self.history[self.best_epoch - 1] if self.history else {}


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("train.device: 'cuda' asked for, but torch sees no GPU here")
    return torch.device(name)


def _model_device(model: CTRModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_batches(model: CTRModel, data: Batches, batch_size: int = 16_384):
    """(labels, probabilities) over every row of `data`, in order, on the model's device."""
    model.eval()
    device = _model_device(model)
    labels, probs = [], []
    for categorical, dense, label, _ in data.batches(batch_size):
        logits = model(categorical.to(device), dense.to(device))
        probs.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(label.numpy())
    if not labels:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(labels), np.concatenate(probs)


def _score(monitor: str, metrics: dict) -> float:
    """Higher is better for every monitor."""
    if monitor == "auc":
        return metrics["auc"]
    if monitor == "logloss":
        return -metrics["logloss"]
    return metrics["auc"] - metrics["logloss"]


def validate(model: CTRModel, data: Batches) -> dict:
    label, prob = distributed.gather(*predict_batches(model, data))
    return {"val_auc": auc(label, prob), "val_logloss": logloss(label, prob)}


def train_epoch(
    model: CTRModel,
    data: Batches,
    settings: TrainSpec,
    optimizer: Optimizer,
    loss: str,
    alpha: float,
    generator: torch.Generator,
    row_l2: list[torch.Tensor] | None = None,
    tables: TableGradients | None = None,
) -> tuple[float, int]:
    """One pass over `data`; returns the mean loss (without the regulariser) and the number of
    rows seen. `row_l2`: the batch-aware regulariser's row weights; `tables`: under DDP with
    sparse updates, what averages the tables' gradients over the ranks."""
    model.train()
    device = _model_device(model)
    total, rows, step = torch.zeros((), device=device), 0, 0
    steps = -(-len(data) // settings.batch_size) if hasattr(data, "__len__") else None
    with progress.task(f"training ({loss})", steps) as bar:
        for batch in data.batches(settings.batch_size, generator):
            categorical, dense, label, y_last = (t.to(device, non_blocking=True) for t in batch)
            objective = training_loss(loss, model(categorical, dense), label, y_last, alpha)
            regularised = objective
            if settings.embedding_l2 > 0 and not optimizer.sparse:  # sparse: RowAdam adds it
                penalty = embedding_penalty(model, categorical, settings.embedding_l2_rows, row_l2)
                regularised = objective + settings.embedding_l2 / 2 * penalty
            optimizer.zero_grad()
            regularised.backward()
            if tables is not None:
                tables.average()
            if settings.max_grad_norm > 0:  # FuxiCTR clips at 10 by default
                optimizer.clip_grad_norm(settings.max_grad_norm)
            optimizer.step()
            total += objective.detach() * len(label)  # stays on the device: no sync per batch
            rows += len(label)
            step += 1
            if step % FINITE_CHECK_STEPS == 0 and not torch.isfinite(total):
                break  # diverged: `fit` says so; no need to finish the epoch first
            bar.advance()
    return float(total) / max(rows, 1), rows


def _check_finite(model: CTRModel, mean_loss: float, epoch: int, lr: float) -> None:
    """Stop a run whose loss or weights stopped being numbers: a version trained on would predict
    NaN for every row, and `score` would hand that on as tomorrow's ỹ_last."""
    # A sum is NaN or infinite when any term is, and costs no 125M-element mask at 7.8M rows.
    broken = [name for name, weight in model.state_dict().items() if not _finite(weight)]
    if math.isfinite(mean_loss) and not broken:
        return
    what = "the loss" if not math.isfinite(mean_loss) else f"weight {broken[0]}"
    raise TrainingFailed(
        f"training diverged: {what} became non-finite in epoch {epoch} (learning rate {lr:g}); "
        "nothing was published: lower train.learning_rate or set train.max_grad_norm"
    )


def _finite(weight: torch.Tensor) -> bool:
    return bool(torch.isfinite(weight.sum(dtype=torch.float64)))


def _check_predictions(model: CTRModel, data: Batches, rows: int) -> None:
    """The trained weights can be finite and still overflow in the forward pass (a huge learning
    rate's last step): score one batch and refuse a model whose pCTR is not a number."""
    model.eval()
    device = _model_device(model)
    batch = next(iter(data.batches(rows)), None)
    if batch is None:
        return
    categorical, dense, _, _ = batch
    with torch.no_grad():
        logits = model(categorical.to(device), dense.to(device))
    if not torch.isfinite(torch.sigmoid(logits)).all():
        raise TrainingFailed(
            "training diverged: the trained model predicts a non-finite pCTR; nothing was "
            "published: lower train.learning_rate or set train.max_grad_norm"
        )


def _uneven_batches(trained: torch.nn.Module, tables: TableGradients | None):
    """Under DDP, let ranks run out of batches at different steps (torch's Join: a rank that is
    done keeps answering the others' collectives); a no-op in one process."""
    if not distributed.is_distributed():
        return contextlib.nullcontext()
    joinables = [trained] + ([tables] if tables is not None else [])
    return Join(joinables, divide_by_initial_world_size=True)


def fit(
    model: CTRModel,
    train: Batches,
    valid: Batches | None,
    settings: TrainSpec,
    loss: str,
    alpha: float,
    seed: int,
) -> FitResult:
    """Train `model` in place on the spec's device (it ends on the CPU); with a validation set,
    stop early and restore the best epoch. Under torchrun, each rank passes its own shard and
    DDP averages the gradients; the per-rank batch is the spec's batch over the world size."""
    device = distributed.init(resolve_device(settings.device))
    model.to(device)
    sparse = wants_sparse(settings.embedding_updates, model, settings.embedding_l2_rows)
    row_l2 = None
    if settings.embedding_l2 > 0 and settings.embedding_l2_rows == "batch-aware":
        row_l2 = batch_aware_weights(model, train, settings.batch_size)  # the global batch
    # Built before DDP, which reads which tables are sparse when it wraps the model.
    optimizer = Optimizer(model, settings.learning_rate, sparse, settings.embedding_l2, row_l2)
    trained: torch.nn.Module = model
    tables = None
    if distributed.is_distributed():
        if sparse:  # DDP's own sparse reduction crashes ranks: sparse_sync.py
            tables = TableGradients([t.weight for t in table_modules(model)], device)
            exclude_from_ddp(model, tables.tables)
        trained = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
        settings = dataclasses.replace(
            settings, batch_size=max(1, settings.batch_size // distributed.world_size())
        )
    generator = torch.Generator().manual_seed(seed)
    result = FitResult(sparse=sparse)
    best_score, best_state, waited = -math.inf, None, 0
    for epoch in range(1, settings.epochs + 1):
        lr = optimizer.learning_rate
        crash_point(f"fit-rank{distributed.rank()}")
        started = time.perf_counter()
        with _uneven_batches(trained, tables):
            mean_loss, rows = train_epoch(
                trained, train, settings, optimizer, loss, alpha, generator, row_l2, tables
            )
        seconds = time.perf_counter() - started
        _check_finite(model, mean_loss, epoch, lr)
        rows = distributed.total(rows)
        entry = {
            "epoch": epoch,
            "loss": mean_loss,
            "rows": rows,
            "lr": lr,
            "train_seconds": seconds,
        }
        if valid is None:
            result.history.append(entry)
            result.best_epoch = epoch
            continue
        entry.update(validate(model, valid))
        result.history.append(entry)
        score = _score(settings.monitor, {"auc": entry["val_auc"], "logloss": entry["val_logloss"]})
        if score > best_score:
            best_score, best_state, waited = score, copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
            continue
        waited += 1
        optimizer.scale_learning_rate(settings.plateau_factor, settings.min_learning_rate)
        if waited >= settings.patience:
            result.stopped_early = epoch < settings.epochs
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    _check_predictions(model, valid or train, settings.batch_size)
    model.cpu()
    return result
