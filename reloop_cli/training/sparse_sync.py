"""Averaging the embedding tables' sparse gradients across DDP ranks, outside DDP.

Why not let DDP do it: torch 2.13's DDP reduces each sparse table in its own bucket,
asynchronously, while backward runs; with two sparse tables under gloo (the field embedding and
the linear term) that crashed a rank in about one run of four (SIGSEGV or "malloc(): unaligned
tcache chunk" inside `backward`), in reloop and in a 30-line plain-PyTorch script alike. DDP
therefore ignores the tables (`exclude_from_ddp`) and `TableGradients.average` sums their
gradients after backward with dense, blocking all-gathers (`distributed.sum_sparse`), which no
run crashed in and which nccl takes as well as gloo.

Ranks can hold a different number of batches (row i goes to rank i mod world), so this is a
`Joinable`: inside `Join([ddp_model, table_gradients])`, a rank that has run out of batches
keeps answering the others' all-gathers with an empty gradient, as DDP's own join hook does for
the dense layers, and when every rank is done the last one's tables are copied to all.
Gradients are divided by the world size, as DDP divides them under join.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms import Join, Joinable, JoinHook

from reloop_cli.training import distributed


def exclude_from_ddp(model: nn.Module, tables: list[nn.Parameter]) -> None:
    """Tell DDP (before it wraps `model`) to leave these parameters' gradients alone."""
    ids = {id(table) for table in tables}
    names = [name for name, parameter in model.named_parameters() if id(parameter) in ids]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)


class TableGradients(Joinable):
    """The sparse gradients of the embedding tables, averaged over the ranks after backward."""

    def __init__(self, tables: list[nn.Parameter], device: torch.device) -> None:
        super().__init__()
        self.tables = tables
        self.device = device

    def average(self) -> None:
        """Replace each table's gradient by the mean over all ranks (call after backward)."""
        Join.notify_join_context(self)
        world = distributed.world_size()
        for table in self.tables:
            grad = table.grad if table.grad is not None else self._empty(table)
            table.grad = distributed.sum_sparse(grad).div_(world)

    def _empty(self, table: nn.Parameter) -> torch.Tensor:
        """A gradient with no rows: what a rank without a batch contributes."""
        rows = torch.zeros((1, 0), dtype=torch.long, device=table.device)
        values = torch.zeros((0, *table.shape[1:]), dtype=table.dtype, device=table.device)
        return torch.sparse_coo_tensor(rows, values, table.shape, check_invariants=False)

    def join_hook(self, **kwargs) -> JoinHook:
        return _Shadow(self)

    @property
    def join_device(self) -> torch.device:
        return self.device

    @property
    def join_process_group(self):
        return torch.distributed.group.WORLD


class _Shadow(JoinHook):
    """On a rank that has joined: take part in the others' all-gathers with no rows; when all
    have joined, copy the tables of the rank that ran longest to every rank."""

    def __init__(self, gradients: TableGradients) -> None:
        self.gradients = gradients

    def main_hook(self) -> None:
        for table in self.gradients.tables:
            distributed.sum_sparse(self.gradients._empty(table))

    def post_hook(self, is_last_joiner: bool) -> None:
        """A rank that joined early skipped the steps it shadowed, so its tables lag: as DDP does
        for the parameters it syncs, broadcast the last joiner's. (Optimizer state is not synced,
        as DDP does not sync it either; ranks differ by at most one batch, row i going to rank
        i mod world.)"""
        last = torch.tensor(
            [distributed.rank() if is_last_joiner else -1], device=self.gradients.device
        )
        dist.all_reduce(last, op=dist.ReduceOp.MAX)
        with torch.no_grad():
            for table in self.gradients.tables:
                dist.broadcast(table.data, src=int(last.item()))
