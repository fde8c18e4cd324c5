"""A simulated day's requests, and what serving them logs: the impressions shown (with served
pCTR and propensity) and the slates they were picked from (`slates.py` reads those back)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from reloop_cli.experiments.synth import DEVICES, World


@dataclass
class Requests:
    """One day's requests as the world drew them, with their candidates."""

    day: str
    index: int
    ids: np.ndarray  # the requests' numbers within the day (kept through an A/B split)
    user: np.ndarray
    hour: np.ndarray
    device: np.ndarray
    ts: np.ndarray
    items: np.ndarray  # [requests, candidates]
    uniforms: np.ndarray  # [requests, slots]: the click draws every arm shares (paired)

    def subset(self, rows: np.ndarray) -> Requests:
        return replace(
            self,
            ids=self.ids[rows],
            user=self.user[rows],
            hour=self.hour[rows],
            device=self.device[rows],
            ts=self.ts[rows],
            items=self.items[rows],
            uniforms=self.uniforms[rows],
        )

    def __len__(self) -> int:
        return len(self.user)


def candidate_rows(world: World, requests: Requests) -> pl.DataFrame:
    """One row per (request, candidate), with the fields a model reads, at position 1."""
    n, k = requests.items.shape
    item = requests.items.reshape(-1)
    repeat = np.repeat(np.arange(n), k)
    return pl.DataFrame(
        {
            "impression_id": [f"{requests.day}-r{r}-c{c}" for r in requests.ids for c in range(k)],
            **world.id_columns(requests.user[repeat], item),
            "hour": pl.Series(requests.hour[repeat]).cast(pl.String),
            "device": pl.Series(DEVICES[requests.device[repeat]]),
            "position": pl.Series(["1"]).extend_constant("1", n * k - 1),
        }
    )


def true_probabilities(world: World, requests: Requests, shown: np.ndarray) -> np.ndarray:
    """[requests, slots] true click probabilities of the shown candidates at their positions."""
    rows = np.arange(len(requests))[:, None]
    items = requests.items[rows, shown]
    position = np.arange(1, shown.shape[1] + 1)[None, :]
    return world.click_probability(
        requests.user[:, None],
        items,
        requests.hour[:, None],
        requests.device[:, None],
        position,
        day=requests.index,
    )


def served_logs(
    world: World,
    requests: Requests,
    shown: np.ndarray,
    propensity: np.ndarray,
    pctr: np.ndarray | None,
    truth: np.ndarray,
    clicks: np.ndarray,
    arm: str,
) -> pl.DataFrame:
    """The impressions an arm served, as its serving system would log them."""
    n, slots = shown.shape
    rows = np.repeat(np.arange(n), slots)
    items = requests.items[np.arange(n)[:, None], shown].reshape(-1)
    ids = requests.ids
    served = np.full(n * slots, np.nan, np.float32) if pctr is None else pctr.reshape(-1)
    return pl.DataFrame(
        {
            "impression_id": [f"{requests.day}-{arm}-r{r}-s{s}" for r in ids for s in range(slots)],
            "request_id": [f"{requests.day}-r{r}" for r in ids[rows]],
            "ts": requests.ts[rows],
            **world.id_columns(requests.user[rows], items),
            "hour": requests.hour[rows].astype(np.int8),
            "device": DEVICES[requests.device[rows]],
            "position": np.tile(np.arange(1, slots + 1), n).astype(np.int8),
            "click": clicks.reshape(-1).astype(np.int8),
            "true_ctr": truth.reshape(-1).astype(np.float32),
            "pctr": pl.Series(served.astype(np.float32)).fill_nan(None),
            "propensity": propensity.reshape(-1),
        }
    )


def slate_rows(world: World, requests: Requests, shown: np.ndarray) -> pl.DataFrame:
    """Every candidate of every request, with the fields a model reads and the slot it was
    shown in (null: not shown): what off-policy evaluation needs to ask what another version's
    policy would have picked (`slates.LoggedDay`)."""
    n, k = requests.items.shape
    slot = np.zeros((n, k), dtype=np.int8)
    slot[np.arange(n)[:, None], shown] = np.arange(1, shown.shape[1] + 1)
    return candidate_rows(world, requests).with_columns(
        pl.Series("request_id", np.repeat([f"{requests.day}-r{r}" for r in requests.ids], k)),
        pl.Series("candidate", np.tile(np.arange(k), n).astype(np.int16)),
        pl.Series("slot", slot.reshape(-1)).replace(0, None),
    )
