"""The key the error memory hashes: a hidden representation of each impression by the version.

Three readings of "the last hidden layer" (`adapt.memory_key`), chosen by measurement
(docs/RESULTS.md section 6):

- `hidden`: the input of the last linear layer with one output unit (the MLP's output unit in
  DeepFM and Wide&Deep, DCN's and xDeepFM's output layer over their concatenated towers): the
  layer after its ReLU. On the sample DeepFM a third of its 32 numbers are exactly 0, and
  SimHash of such keys falls into a few dozen buckets of thousands.
- `preactivation`: the output of the last hidden linear layer before its activation (the MLP's
  last hidden layer; where the output layer reads no hidden linear layer, as `hidden`).
- `standardized`: that pre-activation centred and scaled per unit by its mean and standard
  deviation over the version's training rows (`KeyStats`), so that random hyperplanes through
  the origin split the keys the version actually makes.

A model without a hidden layer (LR, FM) keys on the flattened field embeddings, the
representation every model shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from reloop_cli.columns import IMPRESSION_ID, TS
from reloop_cli.errors import BadInput
from reloop_cli.features.encoding import TensorTable
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import LoadedVersion
from reloop_cli.versions.score import encode_for

BATCH = 4_096


STATS_ROWS = 20_000  # training rows the standardised key's mean and scale are taken over
MIN_SCALE = 1e-6  # a unit that never moves is centred, not divided by zero


@dataclass(frozen=True)
class KeyStats:
    """Per key unit, the mean and standard deviation over a version's training rows."""

    mean: list[float]
    std: list[float]

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}


def key_layer(model: nn.Module, kind: str = "hidden") -> tuple[nn.Module, bool]:
    """(module whose input, or output, is the key; True when it is the input)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    outputs = [m for m in linears if m.out_features == 1]
    if not outputs:
        return model.embedding, False
    if kind != "hidden":
        hidden = [m for m in linears[: linears.index(outputs[-1])] if m.out_features > 1]
        if hidden:
            return hidden[-1], False
    return outputs[-1], True


def no_key(model: nn.Module) -> str:
    """Why a model's memory cannot be keyed (a logistic regression never reads an embedding)."""
    return (
        f"model {type(model).__name__}: its forward pass has no layer to key ReLoop2's memory "
        "by (a model with embeddings, such as deepfm, has one)"
    )


class ProbabilityAndKey(nn.Module):
    """The network with its sigmoid and the key, read in the same pass by a hook on
    `key_layer`: run eagerly by `predict_with_keys`, traced by `reloop serve` (the hook's tensor
    is part of the traced graph, so it costs one more output, not a second forward). With
    `stats`, the key is standardised by them."""

    def __init__(self, model: nn.Module, kind: str = "hidden", stats: KeyStats | None = None):
        super().__init__()
        self.model = model
        self.layer, self.key_is_input = key_layer(model, kind)
        self.standardize = stats is not None
        mean = torch.tensor(stats.mean if stats else [0.0], dtype=torch.float32)
        scale = torch.tensor(stats.std if stats else [1.0], dtype=torch.float32)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("scale", scale.clamp(min=MIN_SCALE), persistent=False)

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor):
        captured: list[torch.Tensor] = []

        def hook(_module, inputs, output) -> None:
            captured.append(inputs[0] if self.key_is_input else output)

        handle = self.layer.register_forward_hook(hook)
        try:
            logits = self.model(categorical, dense)
        finally:
            handle.remove()
        if not captured:  # a logistic regression never reads its embedding: an empty key
            return torch.sigmoid(logits), logits.new_zeros((logits.shape[0], 0))
        key = captured[-1]
        key = key.reshape(key.shape[0], -1)
        if self.standardize:
            key = (key - self.mean) / self.scale
        return torch.sigmoid(logits), key


@torch.no_grad()
def predict_with_keys(
    model: nn.Module,
    categorical: torch.Tensor,
    dense: torch.Tensor,
    kind: str = "hidden",
    stats: KeyStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(pCTR [n] float64, keys [n, d] float32), in batches, the model in eval mode."""
    model.eval()
    wrapped = ProbabilityAndKey(model, kind, stats)
    pctr, keys = [], []
    for start in range(0, categorical.shape[0], BATCH):
        prob, key = wrapped(categorical[start : start + BATCH], dense[start : start + BATCH])
        pctr.append(prob.double())
        keys.append(key.float())
    if not pctr:
        return np.zeros(0), np.zeros((0, 0), np.float32)
    return torch.cat(pctr).numpy(), torch.cat(keys).numpy()


def score_with_keys(
    ws: Workspace,
    loaded: LoadedVersion,
    rows: pl.LazyFrame,
    kind: str = "hidden",
    stats: KeyStats | None = None,
) -> tuple[np.ndarray, np.ndarray, TensorTable]:
    """(pCTR, keys, the encoded inputs) of raw log rows, in their order, encoded as
    `versions.score.predict_frame` encodes them."""
    _, table = encode_for(loaded, ws, rows)
    pctr, keys = predict_with_keys(loaded.model, table.categorical, table.dense, kind, stats)
    return pctr, keys, table


def training_key_stats(ws: Workspace, loaded: LoadedVersion) -> KeyStats:
    """The pre-activation key's mean and standard deviation over up to STATS_ROWS rows of the
    version's training window (every k-th row, in a fixed order: the same version, the same
    statistics)."""
    days = [d for d in loaded.meta.get("window", [loaded.meta["day"]]) if d in ws.days()]
    if not days:
        raise BadInput(f"v{loaded.meta['version']}: none of its training days is in {ws.root}")
    frame = ws.scan_logs(days).sort(TS, IMPRESSION_ID).collect()
    step = max(1, frame.height // STATS_ROWS)
    _, keys, _ = score_with_keys(ws, loaded, frame[::step].lazy(), "preactivation")
    if keys.shape[1] == 0:
        raise BadInput(no_key(loaded.model))
    return KeyStats(
        mean=keys.mean(axis=0).astype(float).tolist(),
        std=keys.std(axis=0).astype(float).tolist(),
    )
