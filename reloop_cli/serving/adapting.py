"""An adapter inside `reloop serve` (`serving.adapter`): the live version's predictions corrected
by what today's labelled impressions did, filled from /feedback, emptied at every swap.

An impression's label is final only once its attribution window (`data.attribution_window`)
has closed: a click may still come until then. So each shown impression is held, with the
version's pCTR, its key (the last hidden layer, for ReLoop2's memory) and the raw values field
bias reads, until the window after it was shown has passed; /feedback marks the held ones that
were clicked; then it is written to the adapter, clicked or not. Clicks and non-clicks reach
the adapter at the same delay, as `reloop replay --label-delay` hands them over; writing a click
the moment it arrives would fill the memory with clicks first and bias it upwards.

Bounded: at most `serving.adapter_pending_rows` impressions are held; past it the oldest are
dropped unwritten (counted in /metrics), never written as guesses. The adapter lives with the
release it corrects: a swap brings a fresh, empty one (a memory keyed by the old version's
hidden layer means nothing to the new one). One lock orders predict and write, as requests are
answered from a thread pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from reloop_cli.adapt.base import Adapter, Rows
from reloop_cli.adapt.from_spec import bias_fields, make_adapter
from reloop_cli.adapt.keys import KeyStats
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.serving import duration_seconds


@dataclass
class Held:
    """A shown impression waiting for its window to close."""

    shown: float
    pctr: float
    key: np.ndarray
    values: dict[str, str]
    clicked: bool = False


class ServedAdapter:
    """One release's adapter, its held impressions and its counts."""

    def __init__(
        self,
        spec: Spec,
        model: torch.nn.Module,
        key_dim: int,
        seed: int,
        key_stats: KeyStats | None = None,
    ) -> None:
        self.name = spec.serving.adapter
        self.adapter: Adapter = make_adapter(self.name, spec, model, key_dim, seed, key_stats)
        self.window = duration_seconds(spec.data.attribution_window)
        self.capacity = spec.serving.adapter_pending_rows
        self.fields = bias_fields(spec)
        self.key_dim = key_dim
        self.held: OrderedDict[str, Held] = OrderedDict()
        self.written = self.dropped = 0
        self.lock = threading.Lock()

    def predict(
        self, pctr: np.ndarray, keys: np.ndarray, values: dict[str, list], now: float
    ) -> np.ndarray:
        """The corrected pCTR of one request's candidates, after writing every impression
        whose window closed by `now`."""
        rows = self._rows(pctr, keys, {name: values[name] for name in self.fields})
        with self.lock:
            self._settle(now)
            return self.adapter.predict(rows)

    def hold(
        self,
        ids: list[str],
        pctr: np.ndarray,
        keys: np.ndarray,
        values: dict[str, list],
        shown: float,
    ) -> None:
        """Keep the shown impressions (`ids`, with their rows' pCTR, keys and values)."""
        with self.lock:
            for row, impression in enumerate(ids):
                picked = {name: str(values[name][row]) for name in self.fields}
                self.held[impression] = Held(shown, float(pctr[row]), keys[row], picked)
            while len(self.held) > self.capacity:
                self.held.popitem(last=False)
                self.dropped += 1

    def click(self, clicks: list[tuple[str, float]]) -> int:
        """Mark held impressions clicked (a click counts inside the impression's window, as
        the click join counts it); how many were held (the others were served by another
        release, dropped, or are not ours)."""
        with self.lock:
            found = 0
            for impression, at in clicks:
                held = self.held.get(impression)
                if held is not None and at <= held.shown + self.window:
                    held.clicked, found = True, found + 1
            self._settle(max(at for _, at in clicks))
            return found

    def _settle(self, now: float) -> None:
        """Write the held impressions whose window has closed (the oldest first)."""
        closed = []
        while self.held:
            impression, held = next(iter(self.held.items()))
            if held.shown + self.window > now:
                break
            closed.append(self.held.pop(impression))
        if not closed:
            return
        rows = self._rows(
            np.array([h.pctr for h in closed]),
            np.stack([h.key for h in closed]),
            {name: [h.values[name] for h in closed] for name in self.fields},
        )
        rows.labels = np.array([1.0 if h.clicked else 0.0 for h in closed])
        self.adapter.observe(rows)
        self.written += len(closed)

    def _rows(self, pctr: np.ndarray, keys: np.ndarray, values: dict[str, list]) -> Rows:
        n = int(pctr.shape[0])
        return Rows(
            pctr=np.asarray(pctr, dtype=np.float64),
            keys=np.asarray(keys, dtype=np.float32).reshape(n, self.key_dim),
            categorical=torch.zeros((n, 0), dtype=torch.long),  # serving adapters read no inputs
            dense=torch.zeros((n, 0)),
            values={name: np.asarray([str(v) for v in column]) for name, column in values.items()},
        )

    def memory_bytes(self) -> int:
        held = len(self.held) * (self.key_dim * 4 + 64)
        return self.adapter.memory_bytes() + held
