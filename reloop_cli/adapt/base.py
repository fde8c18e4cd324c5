"""What every adapter shares: the rows it sees, and the four things it does with them.

An adapter sits between a version and what it serves. `predict` corrects a batch of the
version's predictions; `observe` takes labelled rows once their labels are known (clicks arrive
late: the replay hands a row over only after `--label-delay`); `reset` forgets everything (a new
version went live); `memory_bytes` says what it holds. The unadapted version is the adapter
that does nothing (`Base`), so every adapter is judged against it on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from reloop_cli.errors import BadInput

PROB_EPS = 1e-6  # predictions are kept inside [eps, 1 - eps], as Logloss clips them


@dataclass
class Rows:
    """A batch of impressions as an adapter sees them."""

    pctr: np.ndarray  # [n] the version's predictions (float64)
    keys: np.ndarray  # [n, d] the version's last hidden layer: what the error memory hashes
    categorical: torch.Tensor  # [n, columns] the encoded inputs (incremental fine-tuning)
    dense: torch.Tensor  # [n, dense fields]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # raw values of chosen fields
    labels: np.ndarray | None = None  # [n] 0/1, only once they are known

    def __len__(self) -> int:
        return int(self.pctr.shape[0])

    def subset(self, index: np.ndarray) -> Rows:
        return replace(
            self,
            pctr=self.pctr[index],
            keys=self.keys[index],
            categorical=self.categorical[index],
            dense=self.dense[index],
            values={name: column[index] for name, column in self.values.items()},
            labels=None if self.labels is None else self.labels[index],
        )


class Adapter:
    """The interface; subclasses override what they change."""

    name = "adapter"

    def predict(self, rows: Rows) -> np.ndarray:
        """Corrected pCTR for `rows` (their labels, if present, are never read here)."""
        raise NotImplementedError

    def observe(self, rows: Rows) -> None:
        """Learn from labelled rows."""

    def reset(self) -> None:
        """Forget everything learned (a new version is live)."""

    def memory_bytes(self) -> int:
        return 0


class Base(Adapter):
    """The unadapted version: what every adapter is paired against."""

    name = "base"

    def predict(self, rows: Rows) -> np.ndarray:
        return np.asarray(rows.pctr, dtype=np.float64)


def clip(prob: np.ndarray) -> np.ndarray:
    return np.clip(prob, PROB_EPS, 1 - PROB_EPS)


def logit(prob: np.ndarray) -> np.ndarray:
    prob = clip(np.asarray(prob, dtype=np.float64))
    return np.log(prob) - np.log1p(-prob)


def sigmoid(value: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-value))


def require_labels(rows: Rows, who: str) -> np.ndarray:
    if rows.labels is None:
        raise BadInput(f"{who}: observe() needs labelled rows")
    return np.asarray(rows.labels, dtype=np.float64)
