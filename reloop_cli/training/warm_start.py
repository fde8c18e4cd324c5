"""Warm start: a new version begins from its parent's weights.

Embedding rows follow values, not row numbers: a value both versions hold keeps the parent's
vector; a new value, or one given a row an evicted value freed, keeps its fresh one. Every other
weight whose shape is unchanged is copied.
"""

from __future__ import annotations

import torch

from reloop_cli.errors import BadInput
from reloop_cli.features import vocabulary
from reloop_cli.models.base import CTRModel
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version


def warm_start(
    model: CTRModel, ws: Workspace, parent: int, spec: Spec, refreshed: vocabulary.Refreshed
) -> None:
    """Start from the parent's weights. Embedding rows follow values, not row numbers: a value
    both versions hold keeps the parent's vector; a new value, or one given a row an evicted
    value freed, keeps its fresh one. The parent's view comes from the vocabulary just
    refreshed when it shares the scope (the same table the file holds, not read again)."""
    view, sizes = refreshed.view, refreshed.sizes
    parent_model = load_version(ws, parent)
    parent_state = parent_model.model.state_dict()
    parent_sizes = parent_model.meta["field_sizes"]
    own = model.state_dict()
    if set(parent_state) != set(own):
        raise BadInput(f"version {parent}: a different model; cannot warm-start from it")
    parent_view = vocabulary.for_version(ws, parent_model.meta, {refreshed.scope: refreshed.vocab})
    pairs = vocabulary.kept_rows(spec, parent_view, view, parent_sizes, sizes)
    for name, module in model.named_modules():
        if hasattr(module, "copy_rows"):
            module.copy_rows(parent_state[f"{name}.table.weight"], parent_sizes, pairs)
    with torch.no_grad():
        for name, tensor in own.items():
            if ".table.weight" not in name and parent_state[name].shape == tensor.shape:
                tensor.copy_(parent_state[name])
