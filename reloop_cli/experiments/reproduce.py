"""`reloop reproduce`: the paper's static protocol (Cai et al. 2022, section 4.1), one command.

1. Split the rows train/validation/test (8:1:1 seeded by default, or three files as given).
2. Per backbone and seed, a *previous* model (BCE) is trained on a seeded 90% of the training rows
   and scores the whole training set: that is ỹ_last. `parent_share` and `parent_epochs` make that
   parent weaker or stronger, to see where self-correction helps (the paper fixes 90%).
3. The backbone is trained with bce, kd and reloop (each alpha of the sweep) on the training rows
   with ỹ_last, stopped early on the validation rows, and measured on the test rows.
Results are mean ± std over the seeds, and the relative lift of each loss over bce.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from reloop_cli.columns import IMPRESSION_ID, REJECT_REASON, Y_LAST
from reloop_cli.data.ingest import load_files
from reloop_cli.errors import BadInput
from reloop_cli.evaluation.metrics import auc, logloss
from reloop_cli.evaluation.statistics import Estimate, across_repeats
from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import TensorTable, encode, to_tensors
from reloop_cli.features.hashing import SPLIT_METHOD, bucket_of
from reloop_cli.models import MODELS, build_model
from reloop_cli.spec.layout import dense_fields, field_slots
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.environment import environment
from reloop_cli.training.fitting import fit, predict_batches, resolve_device

SPLIT_BUCKETS = 10_000


def parse_split(text: str) -> tuple[float, float, float] | None:
    """'8:1:1' -> fractions; 'files' -> None (train, validation and test files as given)."""
    if text == "files":
        return None
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or parts[2] <= 0:
        raise BadInput(f"split: '{text}' is not train:valid:test like 8:1:1, or 'files'")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


@dataclass
class Arm:
    """One row of the results table: a backbone trained with one loss (and alpha)."""

    model: str
    loss: str
    alpha: float | None
    runs: list[dict] = field(default_factory=list)  # per seed: auc, logloss, best_epoch

    def stat(self, key: str) -> tuple[float, float]:
        values = [r[key] for r in self.runs]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    def to_dict(self) -> dict:
        (auc_mean, auc_std), (ll_mean, ll_std) = self.stat("auc"), self.stat("logloss")
        return {
            "model": self.model,
            "loss": self.loss,
            "alpha": self.alpha,
            "auc_mean": auc_mean,
            "auc_std": auc_std,
            "logloss_mean": ll_mean,
            "logloss_std": ll_std,
            "runs": self.runs,
        }


@dataclass
class ReproduceResult:
    split: str
    rows: dict[str, int]
    seeds: list[int]
    arms: list[Arm]
    previous: list[dict] = field(default_factory=list)  # the ỹ_last models' test metrics
    parent: dict = field(default_factory=dict)  # how the ỹ_last models were trained

    def lift(self, arm: Arm) -> dict[str, float]:
        """Relative change over the same backbone's bce, in percent (mean over seeds)."""
        base = next(a for a in self.arms if a.model == arm.model and a.loss == "bce")
        b_auc, b_ll = base.stat("auc")[0], base.stat("logloss")[0]
        a_auc, a_ll = arm.stat("auc")[0], arm.stat("logloss")[0]
        return {"auc_pct": 100 * (a_auc - b_auc) / b_auc, "logloss_pct": 100 * (a_ll - b_ll) / b_ll}

    def difference(self, arm: Arm, key: str) -> Estimate:
        """`arm` minus the same backbone's bce, paired by seed (both trained with it), with
        Student's t interval across seeds: whether the loss helps beyond seed-to-seed noise."""
        base = next(a for a in self.arms if a.model == arm.model and a.loss == "bce")
        by_seed = {r["seed"]: r[key] for r in base.runs}
        return across_repeats([r[key] - by_seed[r["seed"]] for r in arm.runs])

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "split_method": SPLIT_METHOD,
            "rows": self.rows,
            "seeds": self.seeds,
            "results": [
                {
                    **a.to_dict(),
                    "lift_over_bce": self.lift(a),
                    "difference_from_bce": {
                        key: self.difference(a, key).to_dict() for key in ("auc", "logloss")
                    },
                }
                for a in self.arms
            ],
            "previous_models": self.previous,
            "parent": self.parent,
            "environment": environment(),
        }


def _load_rows(ws: Workspace, spec: Spec, files: list[Path]) -> pl.DataFrame:
    if files:
        return load_files(files, spec, None, spec.data.start_date).filter(
            pl.col(REJECT_REASON).is_null()
        )
    days = ws.days()
    if not days:
        raise BadInput(f"{ws.root}: nothing ingested; give log files or ingest first")
    return ws.scan_logs(days).collect()


def split_rows(
    ws: Workspace,
    spec: Spec,
    files: list[Path],
    split: tuple[float, float, float] | None,
    split_seed: int,
) -> dict[str, pl.DataFrame]:
    """train / valid / test frames, by a seeded hash of the impression id or by file."""
    if split is None:
        if len(files) != 3:
            raise BadInput("split 'files': give exactly three files: train, validation, test")
        parts = [_load_rows(ws, spec, [f]) for f in files]
        return dict(zip(("train", "valid", "test"), parts, strict=True))
    rows = _load_rows(ws, spec, files)
    bucket = bucket_of(IMPRESSION_ID, split_seed, SPLIT_BUCKETS).alias("_bucket")
    rows = rows.with_columns(bucket)
    train_end = round(split[0] * SPLIT_BUCKETS)
    valid_end = round((split[0] + split[1]) * SPLIT_BUCKETS)
    return {
        "train": rows.filter(pl.col("_bucket") < train_end),
        "valid": rows.filter(pl.col("_bucket").is_between(train_end, valid_end, closed="left")),
        "test": rows.filter(pl.col("_bucket") >= valid_end),
    }


def encode_splits(
    parts: dict[str, pl.DataFrame], spec: Spec
) -> tuple[dict[str, TensorTable], list[int]]:
    """Encode each split with one vocabulary built from the training rows only."""
    vocab, sizes = vocabulary.build(spec, parts["train"].lazy())
    tables = {}
    for name, frame in parts.items():
        encoded = encode(frame.lazy(), spec, vocab, sizes).collect()
        tables[name] = to_tensors(encoded, spec, Y_LAST)
    return tables, sizes


def _subset(table: TensorTable, index: torch.Tensor) -> TensorTable:
    return TensorTable(
        table.categorical[index], table.dense[index], table.label[index], table.y_last[index]
    )


def _train_and_test(
    spec: Spec,
    sizes: list[int],
    train: TensorTable,
    valid: TensorTable,
    test: TensorTable,
    loss: str,
    alpha: float,
    seed: int,
):
    torch.manual_seed(seed)
    model = build_model(spec.model, sizes, len(dense_fields(spec)), field_slots(spec))
    fitted = fit(model, train, valid if len(valid) else None, spec.train, loss, alpha, seed)
    label, prob = predict_batches(model, test)
    metrics = {
        "seed": seed,
        "auc": auc(label, prob),
        "logloss": logloss(label, prob),
        "best_epoch": fitted.best_epoch,
    }
    return model, metrics


def reproduce(
    ws: Workspace,
    spec: Spec,
    *,
    files: list[Path],
    models: list[str],
    seeds: int,
    alphas: list[float],
    split: str = "8:1:1",
    split_seed: int = 0,
    parent_share: float = 0.9,
    parent_epochs: int | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> ReproduceResult:
    """Run the static protocol; writes nothing to the workspace.

    The previous model sees a seeded `parent_share` of the training rows for at most
    `parent_epochs` epochs (default: the spec's), then scores every training row.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise BadInput(f"models: {','.join(unknown) or '(none)'} not among {sorted(MODELS)}")
    if seeds < 1:
        raise BadInput("seeds: must be >= 1")
    for alpha in alphas:
        spec.override("train", alpha=alpha)  # validates the range
    if not 0 < parent_share <= 1:
        raise BadInput(f"parent_share: {parent_share} is not in (0, 1]")
    if parent_epochs is not None and parent_epochs < 1:
        raise BadInput(f"parent_epochs: {parent_epochs} must be >= 1")
    resolve_device(spec.train.device)
    parts = split_rows(ws, spec, files, parse_split(split), split_seed)
    if min(parts["train"].height, parts["test"].height) == 0:
        raise BadInput("reproduce: the split leaves no training or no test rows")
    tables, sizes = encode_splits(parts, spec)
    train, valid, test = tables["train"], tables["valid"], tables["test"]
    seed_list = [spec.train.seed + i for i in range(seeds)]
    arms: list[Arm] = []
    previous: list[dict] = []
    for name in models:
        model_spec = spec.override("model", name=name)
        parent_spec = model_spec.override("train", epochs=parent_epochs)
        losses = [("bce", None), *[(loss, a) for loss in ("kd", "reloop") for a in alphas]]
        rows = {key: Arm(name, key[0], key[1]) for key in losses}
        for seed in seed_list:
            on_step(f"{name} seed {seed}: previous model on {parent_share:.0%} of train")
            generator = torch.Generator().manual_seed(seed)
            kept = max(1, int(parent_share * len(train)))
            keep = torch.randperm(len(train), generator=generator)[:kept]
            prev_model, prev_metrics = _train_and_test(
                parent_spec, sizes, _subset(train, keep), valid, test, "bce", 0.0, seed
            )
            previous.append({"model": name, **prev_metrics})
            _, y_last = predict_batches(prev_model, train)
            with_last = TensorTable(
                train.categorical,
                train.dense,
                train.label,
                torch.from_numpy(y_last.astype(np.float32)),
            )
            for loss, alpha in losses:
                on_step(f"{name} seed {seed}: {loss}" + (f" alpha={alpha}" if alpha else ""))
                _, metrics = _train_and_test(
                    model_spec, sizes, with_last, valid, test, loss, alpha or 0.0, seed
                )
                rows[(loss, alpha)].runs.append(metrics)
        arms.extend(rows.values())
    counts = {name: frame.height for name, frame in parts.items()}
    parent = {"share": parent_share, "epochs": parent_epochs or spec.train.epochs}
    return ReproduceResult(split, counts, seed_list, arms, previous, parent)
