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

from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import TensorTable, encode, to_tensors
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import LoadedVersion

BATCH = 4_096


def key_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """(module whose input, or output, is the key; True when it is the input)."""
    outputs = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if outputs:
        return outputs[-1], True
    return model.embedding, False


@torch.no_grad()
def predict_with_keys(
    model: nn.Module, categorical: torch.Tensor, dense: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """(pCTR [n] float64, keys [n, d] float32), in batches, the model in eval mode."""
    model.eval()
    layer, is_input = key_layer(model)
    captured: list[torch.Tensor] = []

    def hook(_module, inputs, output) -> None:
        tensor = inputs[0] if is_input else output
        captured.append(tensor.reshape(tensor.shape[0], -1).float())

    handle = layer.register_forward_hook(hook)
    pctr, keys = [], []
    try:
        for start in range(0, categorical.shape[0], BATCH):
            captured.clear()
            logits = model(categorical[start : start + BATCH], dense[start : start + BATCH])
            pctr.append(torch.sigmoid(logits).double())
            keys.append(captured[-1])
    finally:
        handle.remove()
    if not pctr:
        return np.zeros(0), np.zeros((0, 0), np.float32)
    return torch.cat(pctr).numpy(), torch.cat(keys).numpy()


def score_with_keys(
    ws: Workspace, loaded: LoadedVersion, rows: pl.LazyFrame
) -> tuple[np.ndarray, np.ndarray, TensorTable]:
    """(pCTR, keys, the encoded inputs) of raw log rows, in their order, encoded with the
    vocabulary as it was when the version trained (as `versions.score.predict_frame` does)."""
    view = vocabulary.for_version(ws, loaded.meta)
    encoded = encode(rows, loaded.spec, view, loaded.meta["field_sizes"]).collect()
    table = to_tensors(encoded, loaded.spec)
    pctr, keys = predict_with_keys(loaded.model, table.categorical, table.dense)
    return pctr, keys, table
