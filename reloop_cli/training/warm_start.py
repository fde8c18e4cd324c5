"""Warm start: a new version begins from its parent's weights, as far as they still fit.

Embedding rows follow values, not row numbers: a value both versions hold keeps the parent's
vector; a new value, or one given a row an evicted value freed, keeps its fresh one. Every other
weight is copied where the parent has one of the same name and shape.

A spec edited between versions is ordinary (a tuned spec goes live), and a nightly run must not
fail every night after the edit: a changed `model.name` trains from scratch; a change that alters
some shapes (`model.embedding_dim`, `model.hidden_units`) copies what still fits and starts the
rest fresh. Either way one line says how the version started, and its meta.json records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from reloop_cli.features import vocabulary
from reloop_cli.models.base import CTRModel
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version

TABLE = ".table.weight"  # a per-value embedding table: copied row by row, by value


@dataclass(frozen=True)
class WarmStart:
    """How a version started: `full` (every weight from the parent), `partial` (what fitted),
    `scratch` (nothing fitted), or `none` (no warm start asked for, or no parent)."""

    parent: int | None
    mode: str
    reason: str = ""
    copied: int = 0  # weights (tensors) taken from the parent
    fresh: int = 0  # weights that start from their initial values

    @property
    def warm(self) -> bool:
        return self.mode in ("full", "partial")

    def describe(self) -> str:
        """One line: 'warm start from v3' or 'from scratch (model.name dcn -> deepfm)'."""
        if self.mode == "none":
            return "from scratch"
        if self.mode == "full":
            return f"warm start from v{self.parent}"
        if self.mode == "partial":
            return f"warm start from v{self.parent}, partial ({self.reason})"
        return f"from scratch, not from v{self.parent} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)


def _model_changes(parent: Spec, child: Spec) -> list[str]:
    """The [model] settings that differ, as 'model.key old -> new'."""
    old, new = parent.to_dict()["model"], child.to_dict()["model"]
    return [f"model.{key} {old[key]} -> {new[key]}" for key in new if old.get(key) != new[key]]


def warm_start(
    model: CTRModel, ws: Workspace, parent: int, spec: Spec, refreshed: vocabulary.Refreshed
) -> WarmStart:
    """Copy into `model` what fits of version `parent`. The parent's vocabulary view comes from
    the vocabulary just refreshed when it shares the scope (the same table, not read again)."""
    parent_model = load_version(ws, parent)
    changes = _model_changes(parent_model.spec, spec)
    if parent_model.spec.model.name != spec.model.name:
        return WarmStart(parent, "scratch", "; ".join(changes), 0, len(model.state_dict()))
    parent_state = parent_model.model.state_dict()
    parent_sizes = parent_model.meta["field_sizes"]
    parent_view = vocabulary.for_version(ws, parent_model.meta, {refreshed.scope: refreshed.vocab})
    pairs = vocabulary.kept_rows(spec, parent_view, refreshed.view, parent_sizes, refreshed.sizes)
    own = model.state_dict()
    copied = 0
    for name, module in model.named_modules():
        key = f"{name}{TABLE}"
        if hasattr(module, "copy_rows") and _same_width(parent_state.get(key), own[key]):
            module.copy_rows(parent_state[key], parent_sizes, pairs)
            copied += 1
    with torch.no_grad():
        for name, tensor in own.items():
            theirs = parent_state.get(name)
            if not name.endswith(TABLE) and theirs is not None and theirs.shape == tensor.shape:
                tensor.copy_(theirs)
                copied += 1
    fresh = len(own) - copied
    if fresh == 0:
        return WarmStart(parent, "full", "", copied, 0)
    reason = "; ".join(changes) or "some weights changed shape"
    mode = "partial" if copied else "scratch"
    return WarmStart(
        parent, mode, f"{reason}: {fresh} of {len(own)} weights start fresh", copied, fresh
    )


def _same_width(parent_table: torch.Tensor | None, own_table: torch.Tensor) -> bool:
    """Rows can be copied between tables of the same embedding width (rows may differ)."""
    return parent_table is not None and parent_table.shape[1:] == own_table.shape[1:]
