"""The batch-aware embedding regulariser: each row's expected penalty per step is the all-rows
form's, a sparse step applies it exactly as the dense loss does, and DDP ranks agree on it."""

from __future__ import annotations

import copy

import pytest
import torch

from reloop_cli.features.encoding import TensorTable
from reloop_cli.models import build_model
from reloop_cli.spec.sections import ModelSpec
from reloop_cli.training.losses import training_loss
from reloop_cli.training.optimizers import Optimizer, table_modules
from reloop_cli.training.regulariser import batch_aware_weights, embedding_penalty
from tests.ranks import run_ranks

WORLD = 2
SIZES = [30, 50]  # two fields, 80 rows; the last rows of each field are never looked up


def toy_rows(n: int = 2_000, seed: int = 0) -> TensorTable:
    """Long-tailed lookups: field 0 draws from 25 of its 30 values, field 1 from 40 of its 50."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.multinomial(1 / torch.arange(1, 26).double(), n, True, generator=generator)
    second = torch.multinomial(
        1 / torch.arange(1, 41).double() ** 1.5, n, True, generator=generator
    )
    categorical = torch.stack([first, second], dim=1)
    return TensorTable(categorical, torch.zeros(n, 0), torch.zeros(n), torch.full((n,), torch.nan))


def test_weights_are_one_over_the_chance_to_be_in_a_batch_and_zero_for_unseen_rows():
    model = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    data = toy_rows()
    weights = batch_aware_weights(model, data, batch_size=64)
    looked_up = torch.cat([data.categorical[:, 0], data.categorical[:, 1] + SIZES[0]])
    counts = torch.bincount(looked_up, minlength=sum(SIZES)).double()
    expected = 1 / (1 - (1 - counts / len(data)) ** 64)
    for weight in weights:  # the field embedding's table and the linear term's, same rows
        seen = counts > 0
        assert torch.allclose(weight[seen].double(), expected[seen], rtol=1e-5)
        assert not weight[~seen].any()
        assert weight[seen].min() >= 1.0  # a row in every batch weighs 1, a rare one more


def test_the_expected_batch_aware_penalty_of_a_step_is_the_whole_table_penalty():
    """Over batches drawn like training's, the mean penalty equals the all-rows form over the
    rows training looks up: the regulariser keeps FuxiCTR's strength while a step touches only
    its batch's rows (and the plain touched form falls far short of it)."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    data = toy_rows()
    batch = 16
    weights = batch_aware_weights(model, data, batch)
    seen = [w > 0 for w in weights]
    whole = sum(
        float(t.weight.detach()[s].pow(2).sum())
        for t, s in zip(table_modules(model), seen, strict=True)
    )
    generator = torch.Generator().manual_seed(1)
    draws = 4_000
    aware = touched = 0.0
    with torch.no_grad():
        for _ in range(draws):
            rows = torch.randint(len(data), (batch,), generator=generator)
            categorical = data.categorical[rows]
            aware += float(embedding_penalty(model, categorical, "batch-aware", weights)) / draws
            touched += float(embedding_penalty(model, categorical, "touched")) / draws
    assert aware == pytest.approx(whole, rel=0.03)
    assert touched < 0.5 * whole


def test_a_sparse_step_applies_the_row_weights_as_the_dense_loss_does():
    """Same parameters after one step, and the same first moment (the step's gradient, weights
    included) on the touched rows; without the weights the moment differs."""
    torch.manual_seed(0)
    start = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    data = toy_rows(200)
    weights = batch_aware_weights(start, data, batch_size=8)
    categorical = data.categorical[:8]
    touched = torch.unique(categorical + torch.tensor([0, SIZES[0]]))
    label = torch.tensor([1.0, 0, 1, 0, 0, 1, 0, 0])

    def one_step(sparse: bool, row_l2):
        model = copy.deepcopy(start)
        optimizer = Optimizer(model, 0.01, sparse, 0.5, row_l2)
        objective = training_loss("bce", model(categorical, torch.zeros(8, 0)), label, label, 0)
        if not sparse:
            penalty = embedding_penalty(model, categorical, "batch-aware", row_l2)
            objective = objective + 0.5 / 2 * penalty
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        moments = [optimizer.parts[-1].state[t.weight]["exp_avg"] for t in table_modules(model)]
        return table_modules(model), moments

    dense, dense_moments = one_step(False, weights)
    sparse, sparse_moments = one_step(True, weights)
    _, plain_moments = one_step(True, None)
    for pair in zip(dense, sparse, dense_moments, sparse_moments, plain_moments, strict=True):
        dense_table, sparse_table, dense_m, sparse_m, plain_m = pair
        assert torch.allclose(sparse_table.weight[touched], dense_table.weight[touched], atol=1e-7)
        assert torch.allclose(sparse_m[touched], dense_m[touched], atol=1e-8)
        assert not torch.allclose(sparse_m[touched], plain_m[touched], atol=1e-6)


def _rank_weights(rank: int) -> list[torch.Tensor]:
    data = toy_rows()
    shard = torch.arange(rank, len(data), WORLD)  # how training shards: row i to rank i % world
    mine = TensorTable(
        data.categorical[shard], data.dense[shard], data.label[shard], data.y_last[shard]
    )
    model = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    return [w.clone() for w in batch_aware_weights(model, mine, batch_size=64)]


@pytest.mark.slow
def test_ddp_ranks_weigh_rows_by_the_whole_window_not_their_shard():
    per_rank = run_ranks(_rank_weights, WORLD)
    model = build_model(ModelSpec(name="fm", embedding_dim=4), SIZES, 0)
    single = batch_aware_weights(model, toy_rows(), batch_size=64)
    for rank_weights in per_rank:
        for theirs, ours in zip(rank_weights, single, strict=True):
            assert torch.allclose(theirs, ours)
