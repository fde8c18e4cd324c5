"""What every model shares: its inputs, its embedding layer, and its output (one logit per row)."""

from __future__ import annotations

import torch
from torch import nn

from reloop_cli.models.layers import FieldEmbedding, LinearTerm
from reloop_cli.spec.sections import ModelSpec


class CTRModel(nn.Module):
    """Base class: `forward(categorical [B, Fc] long, dense [B, Fd] float) -> logits [B]`.

    The base owns the constructor and the shared field embedding; a model adds its own layers in
    `build`, so the zoo's modules say only what differs between models.
    """

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
        self.build(spec)

    def build(self, spec: ModelSpec) -> None:
        """Create the model's own layers; called once the shared embedding exists."""
        raise NotImplementedError

    def linear_term(self) -> LinearTerm:
        """First-order weights over the same fields (and tag slots) as the embedding."""
        table = self.embedding
        return LinearTerm(table.field_sizes, table.dense.shape[0], table.slots)

    def embedding_tables(self) -> list[nn.Module]:
        """Modules whose rows are per-value (grown on warm start, L2-regularised)."""
        return [m for m in self.modules() if isinstance(m, FieldEmbedding)]

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def field_embeddings(model: nn.Module) -> list[nn.Module]:
    """`model.embedding_tables()`, also when DDP wraps the model (as its `module`): what the
    optimizer and the regulariser both need, under torchrun as in one process."""
    return getattr(model, "module", model).embedding_tables()
