"""Sparse table gradients averaged over DDP ranks outside DDP (reloop_cli/sparse_sync.py): the sum
is the sum, and ranks with different numbers of batches end with the same tables, equal to what
averaging every step's gradients by hand gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributed.algorithms import Join

from reloop_cli.training import distributed
from reloop_cli.training.sparse_sync import TableGradients, exclude_from_ddp
from tests.ranks import run_ranks

pytestmark = pytest.mark.slow  # subprocesses and ranks: seconds each

WORLD = 2
ROWS, DIM = 12, 3
# Rank 0 runs three batches, rank 1 one: ids per batch, per rank. Rows repeat inside a batch,
# overlap across ranks, and rows 10 and 11 are never looked up.
BATCHES = {
    0: [torch.tensor([1, 3, 3, 7]), torch.tensor([0, 9]), torch.tensor([5, 5, 5])],
    1: [torch.tensor([3, 4, 8, 1])],
}


class Toy(nn.Module):
    """Two sparse tables (as DeepFM's field embedding and linear term) and a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(ROWS, DIM, sparse=True)
        self.linear = nn.Embedding(ROWS, 1, sparse=True)
        self.head = nn.Linear(DIM, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.head(self.embedding(ids)) + self.linear(ids)).pow(2).sum()


def _rank_sums(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    if rank == 0:  # duplicates, uncoalesced
        grad = torch.sparse_coo_tensor([[2, 5, 2]], torch.ones(3, DIM), (ROWS, DIM))
        empty_elsewhere = torch.sparse_coo_tensor([[4]], torch.full((1, DIM), 2.0), (ROWS, DIM))
    else:
        grad = torch.sparse_coo_tensor([[5, 0]], torch.full((2, DIM), 3.0), (ROWS, DIM))
        empty_elsewhere = torch.sparse_coo_tensor(
            torch.zeros((1, 0), dtype=torch.long), torch.zeros(0, DIM), (ROWS, DIM)
        )
    return (
        distributed.sum_sparse(grad).to_dense(),
        distributed.sum_sparse(empty_elsewhere).to_dense(),
    )


def test_sum_sparse_adds_every_ranks_rows_including_a_rank_with_none():
    per_rank = run_ranks(_rank_sums, WORLD)
    expected = torch.zeros(ROWS, DIM)
    expected[2], expected[5], expected[0] = 2.0, 1.0 + 3.0, 3.0
    only_rank0 = torch.zeros(ROWS, DIM)
    only_rank0[4] = 2.0
    for summed, other in per_rank:
        assert torch.equal(summed, expected)
        assert torch.equal(other, only_rank0)


def _rank_train(rank: int) -> dict[str, torch.Tensor]:
    model = Toy()
    tables = TableGradients([model.embedding.weight, model.linear.weight], torch.device("cpu"))
    exclude_from_ddp(model, tables.tables)
    trained = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Join([trained, tables], divide_by_initial_world_size=True):
        for ids in BATCHES[rank]:
            optimizer.zero_grad()
            trained(ids).backward()
            tables.average()
            optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _by_hand() -> dict[str, torch.Tensor]:
    """One process: each step's gradient is the sum of the gradients of the ranks that still have
    a batch, divided by the world size (DDP's rule under Join), then one SGD step."""
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(max(len(batches) for batches in BATCHES.values())):
        summed = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
        for batches in BATCHES.values():
            if step < len(batches):
                model.zero_grad()
                model(batches[step]).backward()
                for name, p in model.named_parameters():
                    summed[name] += p.grad.to_dense() if p.grad.is_sparse else p.grad
        for name, p in model.named_parameters():
            p.grad = summed[name] / WORLD
        optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_ranks_with_uneven_batches_end_with_the_same_tables_as_averaging_by_hand():
    per_rank = run_ranks(_rank_train, WORLD)
    expected = _by_hand()
    start = dict(Toy().named_parameters())
    for parameters in per_rank:
        for name, value in expected.items():
            assert torch.allclose(parameters[name], value, atol=1e-6), name
    # Rows only rank 0 touched after rank 1 ran out (0, 9, 5) moved on rank 1 as well.
    assert not torch.allclose(
        per_rank[1]["embedding.weight"][[0, 5, 9]], start["embedding.weight"][[0, 5, 9]]
    )
