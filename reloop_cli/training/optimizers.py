"""The optimiser of a training run: RowAdam on the embedding rows a batch touches, Adam on the
dense layers.

Why: a dense Adam step reads and writes every row of an embedding table (its gradient, both
moments, the update), so a step costs as much as the vocabulary is large, not as the batch is
(issue 13 measured 511 ms a step at 26,000 table rows and 4,963 ms at 10.4M). With sparse
gradients only the rows the batch looked up are updated: "lazy" Adam (torch's `SparseAdam`
rule), whose moments of a row decay only on the steps that touch it. `RowAdam` applies Adam's
update to the touched rows with index kernels (gather the rows' moments, update, scatter back),
which measured 3x faster than `torch.optim.SparseAdam`'s sparse-tensor arithmetic at 106,000
touched rows of a 10.4M-row table. Below `SPARSE_MIN_ROWS` table rows the dense step
is as fast or faster (docs/BENCHMARKS.md), so `train.embedding_updates = "auto"` keeps small
tables dense.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reloop_cli.models.base import field_embeddings

# Table rows from which sparse updates are faster than dense ones on this project's 2-core
# machine (DeepFM, 26 fields, dim 16; `python -m benchmarks.embeddings`, docs/BENCHMARKS.md).
SPARSE_MIN_ROWS = 200_000


class RowAdam(torch.optim.Optimizer):
    """Adam on the rows a sparse gradient touches: for each touched row, m <- b1 m + (1 - b1) g,
    v <- b2 v + (1 - b2) g^2, and the row moves by -lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t))
    + eps), torch.optim.Adam's own formula (SparseAdam puts eps inside the bias correction,
    which at step 1 makes it 32 times larger, and so differs from dense Adam on small
    gradients). Untouched rows and their moments stay as they are; `t` counts the steps.

    `l2` adds the gradient of l2/2 * ||row||^2 to each touched row (l2 * row): the embedding
    regulariser on the rows a batch touches, without a second lookup through autograd. A param
    group's `row_l2` (a tensor, one weight per row: `regulariser.batch_aware_weights`) scales it
    row by row."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        l2: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "l2": l2, "row_l2": None}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                grad = parameter.grad
                if not grad.is_sparse:
                    raise RuntimeError("RowAdam takes sparse gradients (nn.Embedding(sparse=True))")
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(parameter)
                    state["exp_avg_sq"] = torch.zeros_like(parameter)
                state["step"] += 1
                grad = grad.coalesce()  # a row looked up several times: its gradients summed
                rows, values = grad.indices()[0], grad.values()
                if group["l2"]:
                    decay = group["l2"] * parameter.index_select(0, rows)
                    if group["row_l2"] is not None:
                        decay.mul_(group["row_l2"].index_select(0, rows).unsqueeze(1))
                    values = values + decay
                exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
                exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                step = state["step"]
                denominator = exp_avg_sq.sqrt_().div_(math.sqrt(1 - beta2**step))
                update = exp_avg.div_(denominator.add_(group["eps"]))
                update.mul_(-group["lr"] / (1 - beta1**step))
                parameter.index_add_(0, rows, update)
        return None


def table_modules(model: nn.Module) -> list[nn.Embedding]:
    """The per-value embedding tables (the shared field embedding's and the linear term's)."""
    return [m.table for m in field_embeddings(model)]


def wants_sparse(setting: str, model: nn.Module, l2_rows: str = "touched") -> bool:
    """Whether the tables learn by sparse updates: "sparse", "dense", or "auto" (by size; dense
    when the regulariser covers every row, which only a dense step can do)."""
    if setting != "auto":
        return setting == "sparse"
    if l2_rows == "all":
        return False
    rows = max((table.num_embeddings for table in table_modules(model)), default=0)
    return rows >= SPARSE_MIN_ROWS  # the vocabulary's rows: every table has one per value


class Optimizer:
    """Adam over the dense parameters and, when `sparse`, RowAdam over the tables' rows;
    one `step`, `zero_grad` and learning rate for both. Call before wrapping the model in DDP:
    DDP reads which embeddings are sparse when it is built. With sparse updates the embedding
    regulariser is applied here (`RowAdam`'s l2); with dense ones the training loop adds it to
    the loss (`regulariser.embedding_penalty`); `row_l2`, one weight tensor per table, weighs
    it row by row ("batch-aware")."""

    def __init__(
        self,
        model: nn.Module,
        learning_rate: float,
        sparse: bool,
        embedding_l2: float = 0.0,
        row_l2: list[torch.Tensor] | None = None,
    ) -> None:
        tables = table_modules(model)
        for table in tables:
            table.sparse = sparse
        self.sparse = sparse
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        table_ids = {id(table.weight) for table in tables}
        dense = [p for p in self.parameters if id(p) not in table_ids]
        rows = [table.weight for table in tables]
        if sparse:
            self.parts: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=learning_rate)]
            if rows:
                weights = row_l2 if row_l2 is not None else [None] * len(rows)
                groups = [
                    {"params": [row], "row_l2": weight}
                    for row, weight in zip(rows, weights, strict=True)
                ]
                self.parts.append(RowAdam(groups, lr=learning_rate, l2=embedding_l2))
        else:
            self.parts = [torch.optim.Adam(self.parameters, lr=learning_rate)]

    @property
    def learning_rate(self) -> float:
        return self.parts[0].param_groups[0]["lr"]

    def scale_learning_rate(self, factor: float, floor: float) -> None:
        for part in self.parts:
            for group in part.param_groups:
                group["lr"] = max(group["lr"] * factor, floor)

    def zero_grad(self) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=True)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale all gradients so their global norm is at most `max_norm` (torch's own
        `clip_grad_norm_` does not take sparse gradients); returns the norm before."""
        squares = []
        for parameter in self.parameters:
            grad = parameter.grad
            if grad is None:
                continue
            if grad.is_sparse:
                grad = grad.coalesce()  # a row looked up twice counts once, summed
                parameter.grad = grad
                squares.append(grad.values().pow(2).sum())
            else:
                squares.append(grad.pow(2).sum())
        if not squares:
            return 0.0
        norm = math.sqrt(float(torch.stack(squares).sum()))
        if norm > max_norm:
            scale = max_norm / (norm + 1e-6)
            for parameter in self.parameters:
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
        return norm
