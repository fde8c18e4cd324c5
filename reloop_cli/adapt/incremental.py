"""Incremental fine-tuning (IncCTR, the baseline ReLoop2 compares with): one warm-started pass of
BCE over each newly labelled batch, on a copy of the version, so the weights follow the day.

The copy starts from the version's weights at every reset; the version itself is never
changed. Values unknown to the version's vocabulary stay on the out-of-vocabulary row, as in
serving (new rows for them wait for the nightly version). `ComposedMemory` puts the error
memory on top of the fine-tuned copy (the paper's best): it reads and writes the copy's
predictions and keys.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from reloop_cli.adapt.base import Adapter, Rows, require_labels
from reloop_cli.adapt.error_memory import ErrorMemory
from reloop_cli.adapt.keys import KeyStats, predict_with_keys


class IncrementalFineTune(Adapter):
    name = "incremental"

    def __init__(
        self,
        model: nn.Module,
        learning_rate: float = 1e-3,
        batch_size: int = 512,
        seed: int = 0,
        key_kind: str = "hidden",
        key_stats: KeyStats | None = None,
    ) -> None:
        self.version_model = model
        self.learning_rate, self.batch_size, self.seed = learning_rate, batch_size, seed
        self.key_kind, self.key_stats = key_kind, key_stats  # the memory's keys, if one reads
        self.reset()

    def reset(self) -> None:
        self.model = copy.deepcopy(self.version_model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.updated = False

    def rescore(self, rows: Rows) -> Rows:
        """The rows as the fine-tuned copy sees them (its pCTR and keys)."""
        if not self.updated:
            return rows
        pctr, keys = predict_with_keys(
            self.model, rows.categorical, rows.dense, self.key_kind, self.key_stats
        )
        return replace(rows, pctr=pctr, keys=keys)

    def predict(self, rows: Rows) -> np.ndarray:
        return self.rescore(rows).pctr

    def observe(self, rows: Rows) -> None:
        labels = torch.from_numpy(require_labels(rows, self.name).astype(np.float32))
        if labels.numel() == 0:
            return
        self.model.train()
        order = torch.randperm(labels.numel(), generator=self.generator)
        loss_fn = nn.BCEWithLogitsLoss()
        for start in range(0, labels.numel(), self.batch_size):
            index = order[start : start + self.batch_size]
            self.optimizer.zero_grad()
            logits = self.model(rows.categorical[index], rows.dense[index])
            loss_fn(logits, labels[index]).backward()
            self.optimizer.step()
        self.model.eval()
        self.updated = True

    def memory_bytes(self) -> int:
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return int(3 * params)  # the copy and Adam's two moments


class ComposedMemory(Adapter):
    """ReLoop2 over incremental fine-tuning: the memory corrects the fine-tuned copy."""

    name = "reloop2+incremental"

    def __init__(self, incremental: IncrementalFineTune, memory: ErrorMemory) -> None:
        self.incremental, self.memory = incremental, memory

    def predict(self, rows: Rows) -> np.ndarray:
        return self.memory.predict(self.incremental.rescore(rows))

    def observe(self, rows: Rows) -> None:
        self.memory.observe(self.incremental.rescore(rows))  # what the copy predicted for them
        self.incremental.observe(rows)

    def reset(self) -> None:
        self.incremental.reset()
        self.memory.reset()

    def memory_bytes(self) -> int:
        return self.incremental.memory_bytes() + self.memory.memory_bytes()

    def occupancy(self) -> dict:
        return self.memory.occupancy()
