"""xDeepFM (Lian et al. 2018): a Compressed Interaction Network for explicit vector-wise
interactions, beside a linear term and an MLP."""

from __future__ import annotations

import torch
from torch import nn

from reloop_cli.models.base import CTRModel
from reloop_cli.models.layers import MLP
from reloop_cli.spec.sections import ModelSpec


class CIN(nn.Module):
    """Each layer: outer products of the base fields with the previous layer, compressed by a
    1x1 convolution to `width` feature maps; every layer's maps are sum-pooled into the output."""

    def __init__(self, num_fields: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        previous = num_fields
        for width in widths:
            self.convs.append(nn.Conv1d(num_fields * previous, width, kernel_size=1))
            previous = width
        self.output = nn.Linear(sum(widths), 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x0.shape
        x, pooled = x0, []
        for conv in self.convs:
            outer = torch.einsum("bhd,bmd->bhmd", x0, x).reshape(batch, -1, dim)
            x = torch.relu(conv(outer))
            pooled.append(x.sum(dim=2))
        return self.output(torch.cat(pooled, dim=1)).squeeze(1)


class XDeepFM(CTRModel):
    def build(self, spec: ModelSpec) -> None:
        self.linear = self.linear_term()
        self.cin = CIN(self.embedding.num_fields, spec.cin_layers)
        self.mlp = MLP(self.flat_dim, spec.hidden_units, spec.dropout, spec.batch_norm)

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embeddings = self.embedding(categorical, dense)
        deep = self.mlp(embeddings.flatten(1)).squeeze(1)
        return self.linear(categorical, dense) + self.cin(embeddings) + deep
