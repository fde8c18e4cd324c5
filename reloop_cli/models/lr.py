"""Logistic regression: one weight per value, the simplest baseline a CTR team keeps around."""

from __future__ import annotations

import torch

from reloop_cli.models.base import CTRModel
from reloop_cli.spec.sections import ModelSpec


class LR(CTRModel):
    def build(self, spec: ModelSpec) -> None:
        self.linear = self.linear_term()

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.linear(categorical, dense)
