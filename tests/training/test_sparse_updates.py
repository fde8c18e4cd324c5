"""Sparse updates: a step equals dense Adam's on the rows a batch touches; nothing else moves."""

from __future__ import annotations

import copy

import pytest
import torch

from reloop_cli.models import build_model
from reloop_cli.spec.sections import ModelSpec
from reloop_cli.training.losses import training_loss
from reloop_cli.training.optimizers import SPARSE_MIN_ROWS, Optimizer, table_modules, wants_sparse
from reloop_cli.training.regulariser import embedding_penalty

SIZES = [40, 60]  # a toy table: two fields, 100 rows


def one_step(sparse: bool, l2: float, model, categorical, label):
    optimizer = Optimizer(model, 0.01, sparse, l2)
    objective = training_loss(
        "bce", model(categorical, torch.zeros(len(label), 0)), label, label, 0
    )
    if l2 and not sparse:
        objective = objective + l2 / 2 * embedding_penalty(model, categorical)
    optimizer.zero_grad()
    objective.backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_one_sparse_step_equals_dense_adam_on_the_touched_rows_and_moves_nothing_else(l2):
    torch.manual_seed(0)
    start = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    categorical = torch.tensor([[1, 3], [1, 5], [7, 3], [2, 59]])  # row 1 and field-1 row 3 twice
    label = torch.tensor([1.0, 0.0, 1.0, 0.0])
    dense, sparse = copy.deepcopy(start), copy.deepcopy(start)
    one_step(False, l2, dense, categorical, label)
    optimizer = one_step(True, l2, sparse, categorical, label)
    offsets = torch.tensor([0, SIZES[0]])
    touched = torch.unique(categorical + offsets)
    untouched = torch.ones(sum(SIZES), dtype=torch.bool)
    untouched[touched] = False
    for before, after_dense, after_sparse in zip(
        table_modules(start), table_modules(dense), table_modules(sparse), strict=True
    ):
        assert torch.allclose(after_sparse.weight[touched], after_dense.weight[touched], atol=1e-7)
        assert not torch.equal(after_sparse.weight[touched], before.weight[touched])
        assert torch.equal(after_sparse.weight[untouched], before.weight[untouched])
        state = optimizer.parts[1].state[after_sparse.weight]
        assert not state["exp_avg"][untouched].any() and not state["exp_avg_sq"][untouched].any()
    dense_rest = dict(dense.named_parameters())
    for name, parameter in sparse.named_parameters():  # the dense layers: plain Adam on both
        if "table" not in name:
            assert torch.allclose(parameter, dense_rest[name], atol=1e-7), name


def test_clipping_counts_a_row_looked_up_twice_once_with_its_summed_gradient():
    torch.manual_seed(0)
    dense = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    sparse = copy.deepcopy(dense)
    categorical = torch.tensor([[1, 3], [1, 3], [2, 4]])
    label = torch.tensor([1.0, 1.0, 0.0])
    norms = []
    for model, is_sparse in ((dense, False), (sparse, True)):
        optimizer = Optimizer(model, 0.01, is_sparse)
        training_loss("bce", model(categorical, torch.zeros(3, 0)), label, label, 0).backward()
        norms.append(optimizer.clip_grad_norm(1e-4))
    assert norms[0] == pytest.approx(norms[1], rel=1e-6)
    after = [
        torch.cat([p.grad.to_dense().flatten() for p in m.parameters() if p.grad is not None])
        for m in (dense, sparse)
    ]
    assert torch.linalg.vector_norm(after[1]) == pytest.approx(1e-4, rel=1e-3)
    assert torch.allclose(after[0], after[1], atol=1e-9)


def test_auto_keeps_small_tables_dense_and_large_ones_sparse():
    spec = ModelSpec(name="lr")
    assert not wants_sparse("auto", build_model(spec, [SPARSE_MIN_ROWS // 2, 99], 0))
    assert wants_sparse("auto", build_model(spec, [SPARSE_MIN_ROWS // 2, SPARSE_MIN_ROWS // 2], 0))
    assert wants_sparse("sparse", build_model(spec, [10], 0))
    assert not wants_sparse("dense", build_model(spec, [SPARSE_MIN_ROWS], 0))


@pytest.mark.slow
def test_training_with_sparse_updates_learns_as_well_as_dense(ws, tiny_logs, sample_spec):
    from reloop_cli.data.ingest import ingest
    from reloop_cli.evaluation.evaluate import evaluate_day
    from reloop_cli.store.registry import Registry
    from reloop_cli.training.train import Lineage, train_version

    ingest(ws, sample_spec, tiny_logs)
    aucs = {}
    with Registry(ws) as registry:
        for updates in ("dense", "sparse"):
            spec = sample_spec.override(  # the touched-row regulariser: sparse updates need it
                "train",
                embedding_updates=updates,
                embedding_l2=0.01,
                embedding_l2_rows="touched",
                epochs=3,
            )
            trained = train_version(
                ws, registry, spec, "2024-01-03", Lineage(use_live_parent=False)
            )
            meta = registry.version_meta(trained.version)
            assert meta["embedding_updates"] == updates
            aucs[updates] = evaluate_day(ws, registry, trained.version, "2024-01-04").metrics.auc
    assert aucs["sparse"] > 0.6
    assert abs(aucs["sparse"] - aucs["dense"]) < 0.03


def test_the_whole_table_regulariser_covers_every_row_and_needs_dense_updates():
    from reloop_cli.errors import BadInput
    from reloop_cli.spec.sections import TrainSpec

    torch.manual_seed(0)
    model = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    categorical = torch.tensor([[1, 3]])
    every = sum(t.weight.pow(2).sum() for t in table_modules(model))
    assert torch.allclose(embedding_penalty(model, categorical, "all"), every)
    touched = embedding_penalty(model, categorical, "touched")
    assert touched < every
    big = build_model(ModelSpec(name="lr"), [SPARSE_MIN_ROWS], 0)
    assert not wants_sparse("auto", big, "all")  # auto falls back to dense for it
    with pytest.raises(BadInput, match="embedding_l2_rows"):
        TrainSpec(embedding_l2_rows="all", embedding_updates="sparse").validate()
