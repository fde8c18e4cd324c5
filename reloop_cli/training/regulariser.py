"""The embedding regulariser, lambda/2 * ||e||^2: which table rows it covers, and with what weight.

Why three forms (`train.embedding_l2_rows`):
- "all": every row every step, FuxiCTR's form. Only a dense step can apply it, so its cost grows
  with the vocabulary (issue 13).
- "touched": the rows a batch looks up, each once, the plain form of sparse CTR trainers. A row
  in few batches is then barely regularised: on Frappe it costs 0.005 AUC against "all" and no
  strength brings it back (docs/RESULTS.md).
- "batch-aware": the touched rows, each weighted by 1 / P(the row is in a batch), with P from
  the row's frequency in the training rows. Each row's expected penalty per step is then the one
  "all" gives it, while a step still touches only its batch's rows: the idea of DIN's
  mini-batch aware regulariser (Zhou et al., KDD 2018), in expectation form. It matches "all" on
  Frappe (docs/RESULTS.md) and works with sparse updates, so it is the default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reloop_cli.models.base import field_embeddings
from reloop_cli.training import distributed

# Rows read at a time while counting how often each table row is looked up.
COUNT_BATCH_ROWS = 65_536


@torch.no_grad()
def batch_aware_weights(model: torch.nn.Module, data, batch_size: int) -> list[torch.Tensor]:
    """Per embedding table, each row's weight 1 / P(row in a batch of `batch_size`): one pass over
    `data` (any `Batches`) counts the lookups; under DDP the counts and rows of every rank's shard
    are summed, and `batch_size` is the global batch. A row no training row looks up is never
    touched and gets weight 0."""
    tables = field_embeddings(model)
    # Tables with one layout (DeepFM's field embedding and linear term) share their counts.
    by_layout = {_layout(module): module for module in tables}
    counts = {
        layout: torch.zeros(module.table.num_embeddings, dtype=torch.float64)
        for layout, module in by_layout.items()
    }
    rows = 0
    for categorical, *_ in data.batches(COUNT_BATCH_ROWS):
        rows += len(categorical)
        for layout, module in by_layout.items():
            looked_up = (categorical + module.offsets.cpu()).reshape(-1)
            counts[layout] += torch.bincount(looked_up, minlength=layout[0]).double()
    rows = distributed.total(rows)
    weights = {}
    for layout, count in counts.items():
        count = distributed.sum_tensor(count)
        share = count / max(rows, 1)  # the chance one training row looks this table row up
        # P(in a batch) = 1 - (1 - share)^batch, computed without cancellation for rare rows
        chance = -torch.expm1(batch_size * torch.log1p(-share.clamp(max=1 - 1e-12)))
        weights[layout] = torch.where(count > 0, 1.0 / chance.clamp(min=1e-300), 0.0).float()
    return [weights[_layout(module)].to(module.table.weight.device) for module in tables]


def _layout(module: torch.nn.Module) -> tuple[int, tuple[int, ...]]:
    """What decides which table row a lookup hits: the table's size and each column's offset."""
    return module.table.num_embeddings, tuple(module.offsets.tolist())


def embedding_penalty(
    model: torch.nn.Module,
    categorical: torch.Tensor,
    rows: str = "touched",
    weights: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sum of squares of the table rows this batch looks up, each row once, times its weight
    when `weights` (from `batch_aware_weights`) are given; `rows="all"`: of every row."""
    total = torch.zeros((), device=categorical.device)
    for position, module in enumerate(field_embeddings(model)):
        weight = module.table.weight
        if rows == "all":
            total = total + weight.pow(2).sum()
            continue
        touched = module.touched_rows(categorical)
        squares = F.embedding(touched, weight, sparse=module.table.sparse).pow(2).sum(dim=1)
        if weights is not None:
            squares = squares * weights[position][touched]
        total = total + squares.sum()
    return total
