"""Wide & Deep (Cheng et al. 2016): a linear (wide) part plus an MLP (deep) part."""

from __future__ import annotations

import torch

from reloop_cli.models.base import CTRModel
from reloop_cli.models.layers import MLP
from reloop_cli.spec.sections import ModelSpec


class WideDeep(CTRModel):
    def build(self, spec: ModelSpec) -> None:
        self.wide = self.linear_term()
        self.deep = MLP(self.flat_dim, spec.hidden_units, spec.dropout, spec.batch_norm)

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embeddings = self.embedding(categorical, dense).flatten(1)
        return self.wide(categorical, dense) + self.deep(embeddings).squeeze(1)
