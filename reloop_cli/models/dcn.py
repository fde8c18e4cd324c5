"""Deep & Cross Network, v1 (Wang et al. 2017) and v2 (Wang et al. 2021): cross layers and an
MLP side by side on the flat embeddings, concatenated into one output layer."""

from __future__ import annotations

import torch
from torch import nn

from reloop_cli.models.base import CTRModel
from reloop_cli.models.layers import MLP, CrossNetwork
from reloop_cli.spec.sections import ModelSpec


class DCN(CTRModel):
    matrix_cross = False  # v1: vector weights per cross layer

    def build(self, spec: ModelSpec) -> None:
        self.cross = CrossNetwork(self.flat_dim, spec.cross_layers, matrix=self.matrix_cross)
        self.deep = MLP(self.flat_dim, spec.hidden_units, spec.dropout, spec.batch_norm, out=0)
        self.output = nn.Linear(self.flat_dim + self.deep.out_dim, 1)

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(categorical, dense).flatten(1)
        return self.output(torch.cat([self.cross(x0), self.deep(x0)], dim=1)).squeeze(1)


class DCNv2(DCN):
    matrix_cross = True  # v2: a full matrix per cross layer
