"""Logistic regression: one weight per value, the simplest baseline a CTR team keeps around."""

from __future__ import annotations

import torch

from reloop_cli.models.base import CTRModel
from reloop_cli.models.layers import LinearTerm
from reloop_cli.spec import ModelSpec


class LR(CTRModel):
    def __init__(
        self,
        field_sizes: list[int],
        n_dense: int,
        spec: ModelSpec,
        slots: list[int] | None = None,
    ) -> None:
        super().__init__(field_sizes, n_dense, spec, slots)
        self.linear = LinearTerm(field_sizes, n_dense, slots)

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.linear(categorical, dense)
