"""Factorization Machine (Rendle 2010): linear term plus all pairwise embedding interactions."""

from __future__ import annotations

import torch

from reloop_cli.models.base import CTRModel
from reloop_cli.models.layers import fm_interaction
from reloop_cli.spec.sections import ModelSpec


class FM(CTRModel):
    def build(self, spec: ModelSpec) -> None:
        self.linear = self.linear_term()

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embeddings = self.embedding(categorical, dense)
        return self.linear(categorical, dense) + fm_interaction(embeddings)
