"""What every model shares: its inputs, its embedding layer, and its output (one logit per row)."""

from __future__ import annotations

import torch
from torch import nn

from reloop_cli.models.layers import FieldEmbedding
from reloop_cli.spec import ModelSpec


class CTRModel(nn.Module):
    """Base class: `forward(categorical [B, Fc] long, dense [B, Fd] float) -> logits [B]`."""

    def __init__(
        self,
        field_sizes: list[int],
        n_dense: int,
        spec: ModelSpec,
        slots: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(field_sizes, n_dense, spec.embedding_dim, slots)
        self.flat_dim = self.embedding.num_fields * spec.embedding_dim

    def embedding_tables(self) -> list[nn.Module]:
        """Modules whose rows are per-value (grown on warm start, L2-regularised)."""
        return [m for m in self.modules() if isinstance(m, FieldEmbedding)]

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
