"""DeepFM (Guo et al. 2017): an FM and an MLP reading the same embeddings, logits added."""

from __future__ import annotations

import torch

from reloop_cli.models.base import CTRModel
from reloop_cli.models.layers import MLP, fm_interaction
from reloop_cli.spec.sections import ModelSpec


class DeepFM(CTRModel):
    def build(self, spec: ModelSpec) -> None:
        self.linear = self.linear_term()
        self.mlp = MLP(self.flat_dim, spec.hidden_units, spec.dropout, spec.batch_norm)

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embeddings = self.embedding(categorical, dense)
        fm_logit = self.linear(categorical, dense) + fm_interaction(embeddings)
        deep_logit = self.mlp(embeddings.flatten(1)).squeeze(1)
        return fm_logit + deep_logit
