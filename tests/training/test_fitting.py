"""Training mechanics: the streamed loader, early stopping, and the static protocol."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from reloop_cli.experiments.reproduce import reproduce
from reloop_cli.features.encoding import TensorTable
from reloop_cli.models import build_model
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.spec.sections import ModelSpec, TrainSpec
from reloop_cli.training.fitting import fit
from reloop_cli.training.loader import ParquetBatches

SPEC = spec_from_dict({"data": {"categorical": ["a"], "numeric": ["x"]}}, "t.toml")


@pytest.mark.parametrize("rows,batch", [(1_000, 64), (1_025, 128), (129, 128), (7, 64)])
def test_streamed_loader_yields_every_row_exactly_once_per_epoch(tmp_path, rows, batch):
    frame = pl.LazyFrame(
        {
            "a": pl.int_range(rows, eager=True) % 7,
            "x": pl.int_range(rows, eager=True) * 1.0,
            "label": [i % 2 for i in range(rows)],
        }
    )
    data = ParquetBatches.write(frame, tmp_path / "t.parquet", SPEC, None, row_group_rows=100)
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(2):
        seen = torch.cat([dense[:, 0] for _, dense, _, _ in data.batches(batch, generator)])
        assert sorted(seen.long().tolist()) == list(range(rows))
        orders.append(seen.tolist())
    assert rows < 10 or orders[0] != orders[1]  # reshuffled between epochs


def test_no_batch_of_one_row_reaches_batch_norm(tmp_path):
    frame = pl.LazyFrame({"a": [1] * 129, "x": [0.0] * 129, "label": [0] * 129})
    data = ParquetBatches.write(frame, tmp_path / "t.parquet", SPEC, None, row_group_rows=50)
    sizes = [len(b[0]) for b in data.batches(64, torch.Generator().manual_seed(1))]
    assert sum(sizes) == 129 and min(sizes) > 1


def _table(n: int, seed: int) -> TensorTable:
    g = torch.Generator().manual_seed(seed)
    cat = torch.randint(1, 50, (n, 1), generator=g)
    label = (torch.rand(n, generator=g) < torch.sigmoid((cat[:, 0] % 5 - 2).float())).float()
    return TensorTable(cat, torch.zeros(n, 0), label, torch.full((n,), float("nan")))


def test_early_stopping_restores_the_best_epoch():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="fm", embedding_dim=8), [50], 0)
    settings = TrainSpec(epochs=30, patience=2, learning_rate=0.05, batch_size=64)
    train, valid = _table(300, 0), _table(300, 1)  # tiny: it overfits, so validation peaks
    result = fit(model, train, valid, settings, "bce", 0.0, seed=0)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + settings.patience
    best = max(h["val_auc"] for h in result.history)
    assert result.best["val_auc"] == best
    from reloop_cli.training.fitting import validate

    assert validate(model, valid)["val_auc"] == pytest.approx(best)  # the best weights are back
    lrs = [h["lr"] for h in result.history]
    assert lrs[-1] < lrs[0]  # reduce-on-plateau lowered the learning rate


@pytest.mark.slow
def test_reproduce_runs_the_static_protocol_on_a_tiny_slice(ws, tiny_logs, sample_spec):
    ingest(ws, sample_spec, tiny_logs[:2])
    spec = sample_spec.override("train", epochs=2)
    result = reproduce(ws, spec, files=[], models=["lr", "deepfm"], seeds=2, alphas=[0.5, 0.9])
    assert result.rows["train"] + result.rows["valid"] + result.rows["test"] == 6_000
    assert [(a.model, a.loss, a.alpha) for a in result.arms][:5] == [
        ("lr", "bce", None),
        ("lr", "kd", 0.5),
        ("lr", "kd", 0.9),
        ("lr", "reloop", 0.5),
        ("lr", "reloop", 0.9),
    ]
    for arm in result.arms:
        assert [r["seed"] for r in arm.runs] == [0, 1]
        assert all(0.5 < r["auc"] < 1 for r in arm.runs)
    deepfm_bce = next(a for a in result.arms if a.model == "deepfm" and a.loss == "bce")
    assert result.lift(deepfm_bce) == {"auc_pct": 0.0, "logloss_pct": 0.0}
    assert len(result.previous) == 4  # one previous model per backbone and seed
    recorded = result.to_dict()["environment"]  # what the figures were computed on
    assert recorded["torch_threads"] == torch.get_num_threads() >= 1
    assert recorded["torch"] == torch.__version__ and recorded["world_size"] == 1


@pytest.mark.slow
def test_reproduce_parent_share_and_epochs_shape_the_previous_model(ws, tiny_logs, sample_spec):
    ingest(ws, sample_spec, tiny_logs[:2])
    spec = sample_spec.override("train", epochs=3)
    kwargs = dict(files=[], models=["lr"], seeds=1, alphas=[0.5])
    weak = reproduce(ws, spec, parent_share=0.05, parent_epochs=1, **kwargs)
    strong = reproduce(ws, spec, parent_share=1.0, **kwargs)
    assert weak.parent == {"share": 0.05, "epochs": 1}
    assert strong.parent == {"share": 1.0, "epochs": 3}
    assert weak.previous[0]["best_epoch"] == 1
    assert weak.previous[0]["auc"] < strong.previous[0]["auc"]
    for bad in ({"parent_share": 0.0}, {"parent_share": 1.5}, {"parent_epochs": 0}):
        with pytest.raises(BadInput, match=r"parent_(share|epochs): "):
            reproduce(ws, spec, **kwargs, **bad)
