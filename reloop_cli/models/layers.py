"""Blocks every model composes: field embeddings, the FM term, an MLP, cross layers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reloop_cli.models.dropout import Dropout

EMBEDDING_INIT_STD = 1e-4  # small-normal: N(0, 1) embeddings stall DeepFM (issue 3's measurement)


class FieldEmbedding(nn.Module):
    """One vector per field and row: categorical fields by lookup, dense fields by scaling.

    All categorical fields share one table, each field owning a contiguous block of rows that
    starts at its offset, so one gather serves every field. `copy_rows` carries a parent's rows
    over for the values both versions hold (`vocabulary.kept_rows`): how a warm start keeps every
    known value's vector while evicted rows, reused by new values, start fresh.

    A multivalued field has `slots` index columns (its tags, 0 = none); its vector is the mean of
    its known tags' rows, the zero vector when it has none (FuxiCTR's masked mean pooling).
    """

    def __init__(
        self, field_sizes: list[int], n_dense: int, dim: int, slots: list[int] | None = None
    ) -> None:
        super().__init__()
        self.field_sizes = list(field_sizes)
        self.slots = list(slots) if slots is not None else [1] * len(self.field_sizes)
        if len(self.slots) != len(self.field_sizes) or min(self.slots, default=1) < 1:
            raise ValueError(f"slots {self.slots} do not fit fields {self.field_sizes}")
        offsets = torch.tensor([0, *field_sizes[:-1]], dtype=torch.long).cumsum(0)
        repeats = torch.tensor(self.slots, dtype=torch.long)
        self.register_buffer("offsets", offsets.repeat_interleave(repeats), persistent=False)
        self.pooled = any(s > 1 for s in self.slots)
        if self.pooled:  # column -> field map, and which columns are tags (0 = padding)
            columns = torch.arange(len(self.slots)).repeat_interleave(repeats)
            assign = torch.nn.functional.one_hot(columns, len(self.slots)).float()
            self.register_buffer("assign", assign, persistent=False)
            self.register_buffer("is_tag", (repeats > 1).repeat_interleave(repeats), False)
        self.table = nn.Embedding(max(sum(field_sizes), 1), dim)
        self.dense = nn.Parameter(torch.empty(n_dense, dim))
        nn.init.normal_(self.table.weight, std=EMBEDDING_INIT_STD)
        nn.init.normal_(self.dense, std=EMBEDDING_INIT_STD)

    @property
    def num_fields(self) -> int:
        return len(self.field_sizes) + self.dense.shape[0]

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """[B, index columns] and [B, Fd] values -> [B, categorical fields + Fd, dim]."""
        parts = []
        if self.field_sizes:
            vectors = self.table(categorical + self.offsets)
            if self.pooled:
                vectors = self._pool(vectors, categorical)
            parts.append(vectors)
        if self.dense.shape[0]:
            parts.append(dense.unsqueeze(-1) * self.dense)
        return torch.cat(parts, dim=1)

    def _pool(self, vectors: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """[B, columns, dim] -> [B, fields, dim]: a tag field's known rows averaged."""
        weight = torch.where(self.is_tag, (categorical != 0).float(), 1.0)
        total = torch.einsum("bcd,bc,cf->bfd", vectors, weight, self.assign)
        count = (weight @ self.assign).clamp(min=1.0)
        return total / count.unsqueeze(-1)

    def touched_rows(self, categorical: torch.Tensor) -> torch.Tensor:
        """The table rows a batch looks up, each once (what a sparse step updates)."""
        return torch.unique(categorical + self.offsets)

    @torch.no_grad()
    def copy_rows(
        self,
        parent_table: torch.Tensor,
        parent_sizes: list[int],
        pairs: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Per field, copy the parent's rows `pairs[f][0]` into this table's rows `pairs[f][1]`."""
        parent_offsets = np.concatenate([[0], np.cumsum(parent_sizes)[:-1]]).astype(np.int64)
        own_offsets = np.concatenate([[0], np.cumsum(self.field_sizes)[:-1]]).astype(np.int64)
        for position, (parent_rows, own_rows) in enumerate(pairs):
            source = torch.from_numpy(parent_rows + parent_offsets[position])
            target = torch.from_numpy(own_rows + own_offsets[position])
            self.table.weight[target] = parent_table[source]


class LinearTerm(nn.Module):
    """First-order weights: a 1-dim field embedding summed over fields, plus a bias."""

    def __init__(
        self, field_sizes: list[int], n_dense: int, slots: list[int] | None = None
    ) -> None:
        super().__init__()
        self.weights = FieldEmbedding(field_sizes, n_dense, 1, slots)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.weights(categorical, dense).sum(dim=(1, 2)) + self.bias


def fm_interaction(embeddings: torch.Tensor) -> torch.Tensor:
    """Sum of all pairwise dot products, Rendle's O(F*D) form: 0.5 * ((sum v)^2 - sum v^2)."""
    square_of_sum = embeddings.sum(dim=1).pow(2)
    sum_of_square = embeddings.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden layer, then one output unit."""

    def __init__(
        self, in_dim: int, hidden: tuple[int, ...], dropout: float, batch_norm: bool, out: int = 1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers.append(nn.Linear(in_dim, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(Dropout(dropout))
            in_dim = width
        if out:
            layers.append(nn.Linear(in_dim, out))
        self.net = nn.Sequential(*layers)
        self.out_dim = out or in_dim
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossNetwork(nn.Module):
    """DCN's cross layers x_{l+1} = x0 * (w_l . x_l) + b_l + x_l (vector w) or, for DCNv2,
    x0 * (W_l x_l + b_l) + x_l (full matrix W)."""

    def __init__(self, dim: int, layers: int, matrix: bool) -> None:
        super().__init__()
        out = dim if matrix else 1
        self.weights = nn.ModuleList(nn.Linear(dim, out, bias=False) for _ in range(layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(layers))
        for w in self.weights:
            nn.init.xavier_normal_(w.weight)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for weight, bias in zip(self.weights, self.biases, strict=True):
            x = x0 * weight(x) + bias + x
        return x
