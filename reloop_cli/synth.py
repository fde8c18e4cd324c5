"""`reloop synth`: a simulated click log that looks like a real feed and drifts from day to day.

Users and items are drawn from long-tailed (Zipf) popularity; every impression has context
(hour, device, position) and its item a category. The true click probability is
sigmoid(base + user-item affinity + item quality + user bias + context effects), and it is written
to `true_ctr` so evaluation can show the oracle. Drift makes a model that is not retrained worse:
new items arrive every day, popularity decays with an item's age, and user interests move.
Everything is drawn from one seeded generator, so the same arguments give the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from reloop_cli.errors import BadInput

DEVICES = np.array(["mobile", "desktop", "tablet"])
DEVICE_SHARE = np.array([0.62, 0.30, 0.08])
DEVICE_EFFECT = np.array([0.0, 0.35, -0.2])
# Traffic by hour of day (a diurnal curve) and a mild evening lift in CTR.
HOUR_SHARE = 1.0 + 0.8 * np.sin((np.arange(24) - 9) / 24 * 2 * np.pi)
HOUR_EFFECT = 0.25 * np.sin((np.arange(24) - 15) / 24 * 2 * np.pi)
POSITIONS = 10


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the simulated world; the defaults give a base CTR near 10%."""

    days: int = 8
    rows_per_day: int = 30_000
    seed: int = 0
    start_date: str = "2024-01-01"
    users: int = 300
    initial_items: int = 1_000
    new_items_per_day: int = 30
    categories: int = 8
    latent_dim: int = 4
    base_logit: float = -2.5
    affinity_scale: float = 1.1
    interest_drift: float = 0.15  # share of a user's taste vector replaced each day
    popularity_half_life_days: float = 5.0


class World:
    """The simulated population; `day()` draws one day of impressions, then drifts."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        k = config.latent_dim
        self.category_vectors = self.rng.normal(0, 1, (config.categories, k)) / np.sqrt(k)
        self.user_vectors = self.rng.normal(0, 1, (config.users, k)) / np.sqrt(k) * 1.5
        self.user_bias = self.rng.normal(0, 0.3, config.users)
        self.user_activity = self._zipf(config.users, 1.0)
        self.item_category = np.zeros(0, np.int64)
        self.item_vectors = np.zeros((0, k))
        self.item_quality = np.zeros(0)
        self.item_appeal = np.zeros(0)
        self.item_birth = np.zeros(0)
        self._add_items(config.initial_items, birth_day=-5.0)

    def _zipf(self, n: int, exponent: float) -> np.ndarray:
        weights = 1.0 / np.arange(1, n + 1) ** exponent
        return self.rng.permutation(weights / weights.sum())

    def _add_items(self, n: int, birth_day: float) -> None:
        k = self.config.latent_dim
        category = self.rng.integers(0, self.config.categories, n)
        vectors = self.category_vectors[category] + self.rng.normal(0, 0.5, (n, k)) / np.sqrt(k)
        self.item_category = np.concatenate([self.item_category, category])
        self.item_vectors = np.vstack([self.item_vectors, vectors * 1.5])
        self.item_quality = np.concatenate([self.item_quality, self.rng.normal(0, 0.3, n)])
        self.item_appeal = np.concatenate([self.item_appeal, self.rng.pareto(1.2, n) + 0.05])
        self.item_birth = np.concatenate([self.item_birth, np.full(n, birth_day)])

    def day(self, index: int) -> pl.DataFrame:
        config, rng, n = self.config, self.rng, self.config.rows_per_day
        age = index - self.item_birth
        popularity = self.item_appeal * 0.5 ** (age / config.popularity_half_life_days)
        user = rng.choice(config.users, n, p=self.user_activity)
        item = rng.choice(popularity.size, n, p=popularity / popularity.sum())
        hour = rng.choice(24, n, p=HOUR_SHARE / HOUR_SHARE.sum())
        device = rng.choice(3, n, p=DEVICE_SHARE)
        position = rng.integers(1, POSITIONS + 1, n)
        affinity = np.einsum("ij,ij->i", self.user_vectors[user], self.item_vectors[item])
        logit = self.logit(affinity, self.item_quality[item], user, hour, device, position)
        true_ctr = 1.0 / (1.0 + np.exp(-logit))
        click = (rng.random(n) < true_ctr).astype(np.int8)
        midnight = datetime.fromisoformat(self.config.start_date).replace(tzinfo=timezone.utc)
        day_start = int((midnight + timedelta(days=index)).timestamp())
        ts = day_start + hour * 3600 + rng.integers(0, 3600, n)
        order = np.argsort(ts, kind="stable")
        day_name = (date.fromisoformat(config.start_date) + timedelta(days=index)).isoformat()
        frame = pl.DataFrame(
            {
                "impression_id": [f"{day_name}-{i:07d}" for i in range(n)],
                "ts": ts[order],
                "user_id": pl.Series(user[order]).cast(pl.String).str.pad_start(5, "0"),
                "item_id": pl.Series(item[order]).cast(pl.String).str.pad_start(6, "0"),
                "category": pl.Series(self.item_category[item[order]]).cast(pl.String),
                "hour": hour[order].astype(np.int8),
                "device": DEVICES[device[order]],
                "position": position[order].astype(np.int8),
                "click": click[order],
                "true_ctr": true_ctr[order].astype(np.float32),
            }
        )
        self._drift(next_day=index + 1)
        return frame

    def logit(
        self,
        affinity: np.ndarray,
        quality: np.ndarray,
        user: np.ndarray,
        hour: np.ndarray,
        device: np.ndarray,
        position: np.ndarray,
    ) -> np.ndarray:
        """The true click logit of impressions, given each one's user-item affinity and item
        quality (passed in so an analysis can ask what yesterday's tastes would have given)."""
        c = self.config
        return (
            c.base_logit
            + c.affinity_scale * affinity
            + quality
            + self.user_bias[user]
            + HOUR_EFFECT[hour]
            + DEVICE_EFFECT[device]
            - 0.12 * (position - 1)
        )

    def _drift(self, next_day: int) -> None:
        """Move user interests and bring in the next day's new items."""
        c = self.config
        noise = self.rng.normal(0, 1, self.user_vectors.shape) / np.sqrt(c.latent_dim) * 1.5
        keep = np.sqrt(1 - c.interest_drift**2)
        self.user_vectors = keep * self.user_vectors + c.interest_drift * noise
        self._add_items(c.new_items_per_day, birth_day=float(next_day))


def synthesize(config: SynthConfig, out: str | Path) -> list[Path]:
    """Write one Parquet file per simulated day into `out`; returns the paths."""
    if config.days < 1 or config.rows_per_day < 1:
        raise BadInput("synth: --days and --rows-per-day must be >= 1")
    try:
        first = date.fromisoformat(config.start_date)
    except ValueError:
        raise BadInput(f"synth: --start-date '{config.start_date}' is not YYYY-MM-DD") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = World(config)
    paths = []
    for index in range(config.days):
        frame = world.day(index)
        path = out / f"clicks-{(first + timedelta(days=index)).isoformat()}.parquet"
        tmp = path.with_suffix(".part")
        frame.write_parquet(tmp, compression="zstd", compression_level=9)
        tmp.replace(path)
        paths.append(path)
    return paths
