"""The key the error memory hashes: the version's last hidden layer for each impression.

"Last hidden layer" is read as the input of the last linear layer with one output unit in the
model (the MLP's output unit in DeepFM and Wide&Deep, DCN's and xDeepFM's output layer over
their concatenated towers). A model without one (LR, FM) has no hidden layer; its key is the
flattened field embeddings, the representation every model shares.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn

from reloop_cli.features.encoding import TensorTable
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import LoadedVersion
from reloop_cli.versions.score import encode_for

BATCH = 4_096


def key_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """(module whose input, or output, is the key; True when it is the input)."""
    outputs = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if outputs:
        return outputs[-1], True
    return model.embedding, False


class ProbabilityAndKey(nn.Module):
    """The network with its sigmoid and the key, read in the same pass by a hook on
    `key_layer`: run eagerly by `predict_with_keys`, traced by `reloop serve` (the hook's tensor
    is part of the traced graph, so it costs one more output, not a second forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layer, self.key_is_input = key_layer(model)

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor):
        captured: list[torch.Tensor] = []

        def hook(_module, inputs, output) -> None:
            captured.append(inputs[0] if self.key_is_input else output)

        handle = self.layer.register_forward_hook(hook)
        try:
            logits = self.model(categorical, dense)
        finally:
            handle.remove()
        key = captured[-1]
        return torch.sigmoid(logits), key.reshape(key.shape[0], -1)


@torch.no_grad()
def predict_with_keys(
    model: nn.Module, categorical: torch.Tensor, dense: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """(pCTR [n] float64, keys [n, d] float32), in batches, the model in eval mode."""
    model.eval()
    wrapped = ProbabilityAndKey(model)
    pctr, keys = [], []
    for start in range(0, categorical.shape[0], BATCH):
        prob, key = wrapped(categorical[start : start + BATCH], dense[start : start + BATCH])
        pctr.append(prob.double())
        keys.append(key.float())
    if not pctr:
        return np.zeros(0), np.zeros((0, 0), np.float32)
    return torch.cat(pctr).numpy(), torch.cat(keys).numpy()


def score_with_keys(
    ws: Workspace, loaded: LoadedVersion, rows: pl.LazyFrame
) -> tuple[np.ndarray, np.ndarray, TensorTable]:
    """(pCTR, keys, the encoded inputs) of raw log rows, in their order, encoded as
    `versions.score.predict_frame` encodes them."""
    _, table = encode_for(loaded, ws, rows)
    pctr, keys = predict_with_keys(loaded.model, table.categorical, table.dense)
    return pctr, keys, table
