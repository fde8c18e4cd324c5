"""Run a function in several gloo ranks on localhost (torch.multiprocessing), as DDP training
would, and collect what each rank returns: for tests of code that talks across ranks."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp


def run_ranks(work: Callable, world: int = 2) -> list:
    """`work(rank)` in `world` processes joined in one gloo group; each rank's result, in rank
    order. `work` must be a module-level function (the processes import it)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(work, world, _free_port(), results), nprocs=world)
        return [results[rank] for rank in range(world)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, work: Callable, world: int, port: int, results) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    # A rank left waiting on a collective fails the test in a minute instead of hanging it.
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        results[rank] = work(rank)
    finally:
        dist.destroy_process_group()
