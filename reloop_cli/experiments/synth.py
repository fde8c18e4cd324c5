"""`reloop synth`: a simulated click log that looks like a real feed and drifts from day to day.

Users and items are drawn from long-tailed (Zipf) popularity; every impression has context
(hour, device, position) and its item a category. For logs at the scale of real ones the world
can hold millions of users and items, bring new users as well as new items every day, and retire
both after a lifetime (ids that stop appearing): what bounded vocabularies are for.

The true click probability is sigmoid(base + user-item affinity + item quality + user bias +
context effects), and it is written to `true_ctr` so evaluation can show the oracle. Drift makes
a model that is not retrained worse: new items arrive every day, popularity decays with an item's
age, and user interests move. Everything is drawn from one seeded generator, so the same
arguments give the same files.
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
    new_users_per_day: int = 0
    user_lifetime_days: int = 0  # users stop appearing this many days after arriving; 0: never
    item_lifetime_days: int = 0  # items stop being shown this many days after arriving; 0: never
    # Within the day (0: off, the bundled sample): the day's new items take up to half this
    # share of the evening's impressions and their logit rises by up to this much by 23:00...
    intraday_trend: float = 0.0
    # ... and the base rate's logit moves from -this at midnight to +this at 23:00.
    intraday_base_shift: float = 0.0


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
        self.user_birth = np.full(config.users, -5.0)
        if config.user_lifetime_days:  # spread over a lifetime, so day-0 users leave gradually
            self.user_birth = -self.rng.uniform(0, config.user_lifetime_days, config.users)
        self.item_category = np.zeros(0, np.int64)
        self.item_vectors = np.zeros((0, k))
        self.item_quality = np.zeros(0)
        self.item_appeal = np.zeros(0)
        self.item_birth = np.zeros(0)
        self._add_items(config.initial_items, birth_day=-5.0)
        if config.item_lifetime_days:  # spread over a lifetime, so day-0 items retire gradually
            self.item_birth = -self.rng.uniform(0, config.item_lifetime_days, config.initial_items)

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

    def popularity(self, index: int) -> np.ndarray:
        """Each item's share of exposure on day `index` (retired items none), unnormalised."""
        config = self.config
        age = index - self.item_birth
        popularity = self.item_appeal * 0.5 ** (age / config.popularity_half_life_days)
        if config.item_lifetime_days:
            popularity = np.where(age < config.item_lifetime_days, popularity, 0.0)
            if not popularity.any():
                raise BadInput(f"synth: no item is live on day {index}; lengthen the lifetime")
        return popularity

    def day_start(self, index: int) -> int:
        """Epoch seconds of day `index`'s UTC midnight."""
        midnight = datetime.fromisoformat(self.config.start_date).replace(tzinfo=timezone.utc)
        return int((midnight + timedelta(days=index)).timestamp())

    def day(self, index: int) -> pl.DataFrame:
        config, rng, n = self.config, self.rng, self.config.rows_per_day
        popularity = self.popularity(index)
        user = rng.choice(self.user_activity.size, n, p=self._active_users(index))
        item = rng.choice(popularity.size, n, p=popularity / popularity.sum())
        hour = rng.choice(24, n, p=HOUR_SHARE / HOUR_SHARE.sum())
        device = rng.choice(3, n, p=DEVICE_SHARE)
        position = rng.integers(1, POSITIONS + 1, n)
        quality, shift = self.item_quality[item], 0.0
        if config.intraday_trend or config.intraday_base_shift:  # more draws only when on
            item, quality, shift = self._intraday(index, item, hour)
        affinity = np.einsum("ij,ij->i", self.user_vectors[user], self.item_vectors[item])
        logit = self.logit(affinity, quality, user, hour, device, position) + shift
        true_ctr = 1.0 / (1.0 + np.exp(-logit))
        click = (rng.random(n) < true_ctr).astype(np.int8)
        ts = self.day_start(index) + hour * 3600 + rng.integers(0, 3600, n)
        order = np.argsort(ts, kind="stable")
        day_name = (date.fromisoformat(config.start_date) + timedelta(days=index)).isoformat()
        frame = pl.DataFrame(
            {
                "impression_id": [f"{day_name}-{i:07d}" for i in range(n)],
                "ts": ts[order],
                **self.id_columns(user[order], item[order]),
                "hour": hour[order].astype(np.int8),
                "device": DEVICES[device[order]],
                "position": position[order].astype(np.int8),
                "click": click[order],
                "true_ctr": true_ctr[order].astype(np.float32),
            }
        )
        self._drift(next_day=index + 1)
        return frame

    def _intraday(
        self, index: int, item: np.ndarray, hour: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Structure within day `index`: the day's new items trend (more of the impressions,
        and more clicks, as the hours pass) and the base rate moves. Returns the rows' items,
        their quality and a logit shift per row."""
        c, progress = self.config, hour / 23.0
        fresh = np.flatnonzero(self.item_birth == index)
        item = item.copy()
        if fresh.size and c.intraday_trend:
            swap = self.rng.random(item.size) < min(c.intraday_trend, 1.0) * 0.5 * progress
            appeal = self.item_appeal[fresh]
            item[swap] = self.rng.choice(fresh, int(swap.sum()), p=appeal / appeal.sum())
        trending = np.isin(item, fresh)
        quality = self.item_quality[item] + c.intraday_trend * progress * trending
        shift = c.intraday_base_shift * (2 * progress - 1)
        return item, quality, shift

    def id_columns(self, user: np.ndarray, item: np.ndarray) -> dict[str, pl.Series]:
        """user_id, item_id and category spelled as every log of this world spells them: the
        closed loop's logs and slates must match the open-loop logs, or a value reads as new."""
        return {
            "user_id": pl.Series(user).cast(pl.String).str.pad_start(5, "0"),
            "item_id": pl.Series(item).cast(pl.String).str.pad_start(6, "0"),
            "category": pl.Series(self.item_category[item]).cast(pl.String),
        }

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

    # --- serving (the closed loop): requests, their candidates, the truth -------------------------
    def requests(self, index: int, n: int) -> dict[str, np.ndarray]:
        """`n` requests of day `index`: who asks, at what hour, on which device, when."""
        rng = self.rng
        user = rng.choice(self.user_activity.size, n, p=self._active_users(index))
        hour = rng.choice(24, n, p=HOUR_SHARE / HOUR_SHARE.sum())
        device = rng.choice(3, n, p=DEVICE_SHARE)
        ts = self.day_start(index) + hour * 3600 + rng.integers(0, 3600, n)
        return {"user": user, "hour": hour, "device": device, "ts": ts}

    def candidates(self, index: int, n: int, k: int, block: int = 2_000) -> np.ndarray:
        """[n, k] distinct items per request from the live pool, drawn by popularity without
        replacement (Gumbel top-k), most likely first."""
        popularity = self.popularity(index)
        live = np.flatnonzero(popularity > 0)
        if live.size < k:
            raise BadInput(f"closed loop: {live.size} live items on day {index}, fewer than {k}")
        keys = np.log(popularity[live])
        out = np.empty((n, k), dtype=np.int64)
        for start in range(0, n, block):  # blocks keep [requests, items] noise small
            rows = min(block, n - start)
            noisy = keys + self.rng.gumbel(size=(rows, live.size))
            best = np.argpartition(-noisy, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(noisy, best, axis=1), axis=1, kind="stable")
            out[start : start + rows] = live[np.take_along_axis(best, order, axis=1)]
        return out

    def click_probability(
        self,
        user: np.ndarray,
        item: np.ndarray,
        hour: np.ndarray,
        device: np.ndarray,
        position: np.ndarray,
        day: int | None = None,
    ) -> np.ndarray:
        """The true click probability of showing `item` to `user` at `position` (1 = top); on
        day `day`, with the config's intra-day structure when it has one (the day's new items
        rising by the hour, the base rate moving), as `day()` draws its logs."""
        affinity = np.einsum("...j,...j->...", self.user_vectors[user], self.item_vectors[item])
        quality, shift = self.item_quality[item], 0.0
        c = self.config
        if day is not None and (c.intraday_trend or c.intraday_base_shift):
            progress = hour / 23.0
            quality = quality + c.intraday_trend * progress * (self.item_birth[item] == day)
            shift = c.intraday_base_shift * (2 * progress - 1)
        logit = self.logit(affinity, quality, user, hour, device, position) + shift
        return 1.0 / (1.0 + np.exp(-logit))

    def advance(self, next_day: int) -> None:
        """The world moves on to the next day (tastes drift, new items arrive)."""
        self._drift(next_day)

    def _active_users(self, index: int) -> np.ndarray:
        """Each user's share of the day's requests (retired users none)."""
        if not self.config.user_lifetime_days and not self.config.new_users_per_day:
            return self.user_activity  # as it always was: the sample's draws stay byte for byte
        if not self.config.user_lifetime_days:
            return self.user_activity / self.user_activity.sum()
        alive = (index - self.user_birth) < self.config.user_lifetime_days
        weights = np.where(alive, self.user_activity, 0.0)
        if not weights.any():
            raise BadInput(
                f"synth: every user has left by day {index}; set new_users_per_day or a "
                "longer user_lifetime_days"
            )
        return weights / weights.sum()

    def _add_users(self, n: int, birth_day: float) -> None:
        """New users, with tastes, biases and activity drawn as the first ones were."""
        k = self.config.latent_dim
        vectors = self.rng.normal(0, 1, (n, k)) / np.sqrt(k) * 1.5
        self.user_vectors = np.vstack([self.user_vectors, vectors])
        self.user_bias = np.concatenate([self.user_bias, self.rng.normal(0, 0.3, n)])
        drawn = self.rng.choice(self.user_activity[: self.config.users], n)
        self.user_activity = np.concatenate([self.user_activity, drawn])
        self.user_birth = np.concatenate([self.user_birth, np.full(n, birth_day)])

    def _drift(self, next_day: int) -> None:
        """Move user interests and bring in the next day's new items (and users)."""
        c = self.config
        noise = self.rng.normal(0, 1, self.user_vectors.shape) / np.sqrt(c.latent_dim) * 1.5
        keep = np.sqrt(1 - c.interest_drift**2)
        self.user_vectors = keep * self.user_vectors + c.interest_drift * noise
        self._add_items(c.new_items_per_day, birth_day=float(next_day))
        if c.new_users_per_day:
            self._add_users(c.new_users_per_day, birth_day=float(next_day))


def synthesize(config: SynthConfig, out: str | Path) -> list[Path]:
    """Write one Parquet file per simulated day into `out`; returns the paths."""
    if config.days < 1 or config.rows_per_day < 1:
        raise BadInput("synth: days and rows_per_day must be >= 1")
    if config.users < 1 or config.initial_items < 1:
        raise BadInput("synth: users and initial_items must be >= 1")
    churn = (
        config.new_items_per_day,
        config.new_users_per_day,
        config.item_lifetime_days,
        config.user_lifetime_days,
    )
    if min(churn) < 0:
        raise BadInput("synth: new ids per day and lifetimes must be >= 0")
    try:
        first = date.fromisoformat(config.start_date)
    except ValueError:
        raise BadInput(f"synth: start_date '{config.start_date}' is not YYYY-MM-DD") from None
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
