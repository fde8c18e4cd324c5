"""`reloop replay`: a day of logs run in time order as serving saw it, each adapter correcting
the version between two retrains, judged slot by slot against the unadapted version.

The day is cut into `slots` equal spans of its 24 hours (in the spec's time zone); or, as the
ReLoop2 paper evaluates, a span of days held out as a test set is cut into `slots` chronological
slices of equal rows (`through`). Before slot s
is predicted, every adapter is handed the labelled rows whose label has arrived by the slot's
start: rows shown at least `label_delay` seconds before it (clicks arrive late). So a slot's
predictions never depend on its own labels or on any later slot's (the test alters them and
checks). Each adapter starts empty (reset) at the day's start, as it would when the version went
live.

Per slot and pooled over the day, for every adapter: AUC (DeLong interval), gAUC grouped by
`adapt.group_field` (groups as the units), Logloss (per-row interval) and the calibration ratio
Σp/Σy; and each adapter paired against `base` on the same rows (DeLong's paired test, the mean
per-row Logloss difference, the paired gAUC difference). The rows' order, the memory's
projections and the fine-tuning's batches are seeded: the same replay gives the same figures,
bit for bit.

The headline is *within-slot*: the mean over slots of each adapter's paired AUC difference,
with the interval of a mean of independent per-slot differences (the slots are disjoint rows:
a stratified DeLong), and gAUC grouped by user within slot. An adapter that only moves each
slot's predictions up or down together (intercept recalibration) cannot change a slot's
ranking, so it scores exactly 0 there, whereas the pooled AUC over the day credits it for
tracking the base rate from hour to hour; the pooled figures are kept, marked as such. A slot
without a click or without a non-click has no AUC: it is counted and left out of the mean, never
a crash. Logloss and calibration stay per slot and pooled: recalibration is what they credit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from reloop_cli.adapt.base import Adapter, Rows
from reloop_cli.adapt.from_spec import bias_fields, group_field, make_adapter
from reloop_cli.adapt.keys import KeyStats, score_with_keys, training_key_stats
from reloop_cli.columns import IMPRESSION_ID, LABEL, TS
from reloop_cli.errors import BadInput
from reloop_cli.evaluation import statistics
from reloop_cli.spec.adapt import ADAPTERS
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import LoadedVersion, load_version

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ReplayRequest:
    version: int
    day: str
    slots: int = 24
    label_delay_seconds: float = 3_600.0
    adapters: tuple[str, ...] = ADAPTERS
    seed: int = 0
    # The paper's protocol: the days `day`..`through` as one held-out test set, cut into
    # `slots` chronological slices of equal rows (MicroVideo's test set in 10), each predicted
    # before its labels reach the adapters (prequential). None: one day, in equal hours.
    through: str | None = None

    @property
    def equal_rows(self) -> bool:
        return self.through is not None

    def validate(self) -> ReplayRequest:
        if not 1 <= self.slots <= 1_440:
            raise BadInput(f"slots: {self.slots} is not in 1..1440")
        if self.through is not None and self.through < self.day:
            raise BadInput(f"through: {self.through} is before the first day {self.day}")
        if self.label_delay_seconds < 0:
            raise BadInput("label_delay: must be >= 0")
        unknown = [a for a in self.adapters if a not in ADAPTERS]
        if unknown:
            raise BadInput(f"adapters: '{unknown[0]}' is not one of {', '.join(ADAPTERS)}")
        return self


@dataclass
class ReplayDay:
    """A day's rows in time order, encoded for the version, with its predictions and keys."""

    rows: Rows
    labels: np.ndarray
    ts: np.ndarray
    slot: np.ndarray  # each row's slot
    groups: np.ndarray
    slot_starts: np.ndarray  # epoch seconds
    key_stats: KeyStats | None = None  # what standardised the keys, if they are


@dataclass
class ReplayResult:
    request: ReplayRequest
    group_field: str
    rows: int
    clicks: int
    slots: list[dict]  # per slot: per adapter its figures and its pairing with base
    pooled: dict  # per adapter, over the day: includes between-slot calibration
    memory_bytes: dict[str, int]
    settings: dict = field(default_factory=dict)
    within_slot: dict = field(default_factory=dict)  # per adapter: the headline (see above)
    occupancy: dict = field(default_factory=dict)  # per adapter with a memory: how it filled

    def to_dict(self) -> dict:
        return asdict(self)


def load_day(ws: Workspace, loaded: LoadedVersion, spec: Spec, request: ReplayRequest) -> ReplayDay:
    """The day's labelled rows in time order (ties by impression id), encoded with the
    vocabulary the version trained with."""
    if request.day not in ws.days():
        raise BadInput(f"day: {request.day} has no ingested logs in {ws.root}")
    last = request.through or request.day
    days = [d for d in ws.days() if request.day <= d <= last]
    grouped_by = group_field(spec)
    raw = ws.scan_logs(days).sort(TS, IMPRESSION_ID).collect()
    if raw.is_empty():
        raise BadInput(f"day: {request.day} has no rows")
    kind = spec.adapt.memory_key
    stats = training_key_stats(ws, loaded) if kind == "standardized" else None
    pctr, keys, table = score_with_keys(ws, loaded, raw.lazy(), kind, stats)
    zone = ZoneInfo(spec.data.timezone)
    midnight = datetime.fromisoformat(request.day).replace(tzinfo=zone).timestamp()
    ts = raw[TS].cast(pl.Float64).to_numpy()  # the workspace keeps epoch seconds (Int64)
    if request.equal_rows:  # slices of equal rows; each starts at its first row's time
        slot = np.arange(ts.size) * request.slots // ts.size
        slot_starts = np.array([ts[np.argmax(slot == k)] for k in range(request.slots)])
    else:
        slot = slot_index(ts, midnight, request.slots)
        slot_starts = midnight + DAY_SECONDS / request.slots * np.arange(request.slots)
    values = {
        name: raw[name].cast(pl.String).fill_null("").to_numpy()
        for name in {*bias_fields(spec), grouped_by}
    }
    rows = Rows(
        pctr=pctr,
        keys=keys,
        categorical=table.categorical,
        dense=table.dense,
        values=values,
    )
    return ReplayDay(
        rows=rows,
        labels=raw[LABEL].to_numpy().astype(np.int8),
        ts=ts,
        slot=slot,
        groups=values[grouped_by],
        slot_starts=slot_starts,
        key_stats=stats,
    )


def build_adapters(
    spec: Spec, loaded: LoadedVersion, day: ReplayDay, names: tuple[str, ...], seed: int
) -> dict[str, Adapter]:
    """The adapters asked for, with the spec's [adapt] settings; `base` always first."""
    chosen = ("base", *[n for n in names if n != "base"])
    key_dim = day.rows.keys.shape[1]
    return {
        name: make_adapter(name, spec, loaded.model, key_dim, seed, day.key_stats)
        for name in chosen
    }


def slot_index(ts: np.ndarray, midnight: float, slots: int) -> np.ndarray:
    """Each row's slot of the day: `slots` equal spans from `midnight`."""
    width = DAY_SECONDS / slots
    return np.clip(((ts - midnight) // width).astype(np.int64), 0, slots - 1)


def labels_arrived(ts_sorted: np.ndarray, start: float, delay: float) -> int:
    """How many of the rows (in time order) have their label at `start`: shown at least
    `delay` seconds before it, and before it at all (a row shown at a slot's first instant is
    that slot's, so even with no delay its label is not handed over before it is predicted)."""
    arrived = np.searchsorted(ts_sorted, start - delay, side="right")
    return int(min(arrived, np.searchsorted(ts_sorted, start, side="left")))


def replay_predictions(
    day: ReplayDay, adapters: dict[str, Adapter], delay: float
) -> dict[str, np.ndarray]:
    """Every adapter's prediction of every row, slot by slot, each slot predicted before the
    labels that arrive during it are handed over."""
    predictions = {name: np.zeros(len(day.rows)) for name in adapters}
    for adapter in adapters.values():
        adapter.reset()
    labelled = replace(day.rows, labels=day.labels.astype(np.float64))
    handed = 0  # rows are in time order: a prefix has been handed over
    for slot, start in enumerate(day.slot_starts):
        ready = labels_arrived(day.ts, start, delay)
        if ready > handed:
            batch = labelled.subset(np.arange(handed, ready))
            for adapter in adapters.values():
                adapter.observe(batch)
            handed = ready
        index = np.flatnonzero(day.slot == slot)
        if index.size == 0:
            continue
        shown = day.rows.subset(index)  # no labels: a prediction cannot read them
        for name, adapter in adapters.items():
            predictions[name][index] = adapter.predict(shown)
    return predictions


def ranks_both(labels: np.ndarray) -> bool:
    """Whether rows hold a click and a non-click: what an AUC needs."""
    return 0 < int(labels.sum()) < labels.size


def figures(labels: np.ndarray, prob: np.ndarray, groups: np.ndarray) -> dict:
    clicks = float(labels.sum())
    both = ranks_both(labels)
    return {
        "rows": int(labels.size),
        "clicks": int(clicks),
        "auc": statistics.auc_estimate(labels, prob).to_dict() if both else None,
        "gauc": statistics.gauc_estimate(labels, prob, groups).to_dict() if both else None,
        "logloss": statistics.logloss_estimate(labels, prob).to_dict(),
        "calibration": float(prob.sum() / clicks) if clicks else math.nan,
    }


def against_base(labels: np.ndarray, base: np.ndarray, mine: np.ndarray, groups) -> dict:
    pair = statistics.paired(labels, base, mine)
    both = ranks_both(labels)
    return {
        "auc": pair.auc.to_dict() if both else None,
        "logloss": pair.logloss.to_dict(),
        "gauc": statistics.paired_gauc(labels, base, mine, groups).to_dict() if both else None,
    }


def within_slot(day: ReplayDay, base: np.ndarray, mine: np.ndarray) -> dict:
    """The headline: the mean over slots that rank (a click and a non-click) of the paired AUC
    difference, its interval that of a mean of independent per-slot DeLong differences; gAUC by
    user within slot; the per-slot Logloss difference averaged alike."""
    aucs, losses, without = [], [], 0
    for slot in np.unique(day.slot):
        index = np.flatnonzero(day.slot == slot)
        labels = day.labels[index]
        pair = statistics.paired(labels, base[index], mine[index])
        losses.append(pair.logloss)
        if ranks_both(labels):
            aucs.append(pair.auc)
        else:
            without += 1
    groups = np.char.add(np.char.add(day.groups.astype(str), "|"), day.slot.astype(str))
    return {
        "auc": statistics.pooled(aucs).to_dict() if aucs else None,
        "gauc": statistics.paired_gauc(day.labels, base, mine, groups).to_dict(),
        "logloss": statistics.pooled(losses).to_dict(),
        "slots_ranked": len(aucs),
        "slots_without_auc": without,
    }


def replay_day(
    ws: Workspace, spec: Spec, request: ReplayRequest, on_step=lambda _: None
) -> ReplayResult:
    """Replay `request.day` with `request.version` and its adapters."""
    request = request.validate()
    loaded = load_version(ws, request.version)
    day = load_day(ws, loaded, spec, request)
    on_step(f"replaying {len(day.rows):,} rows of {request.day} in {request.slots} slots")
    adapters = build_adapters(spec, loaded, day, request.adapters, request.seed)
    predictions = replay_predictions(day, adapters, request.label_delay_seconds)
    base = predictions["base"]
    slots = []
    for slot in range(request.slots):
        index = np.flatnonzero(day.slot == slot)
        labels, groups = day.labels[index], day.groups[index]
        entry: dict = {"slot": slot, "start": float(day.slot_starts[slot]), "rows": int(index.size)}
        for name, prob in predictions.items():
            entry[name] = figures(labels, prob[index], groups) if index.size else {}
            if name != "base" and index.size:
                entry[name]["vs_base"] = against_base(labels, base[index], prob[index], groups)
        slots.append(entry)
    pooled = {}
    for name, prob in predictions.items():
        pooled[name] = figures(day.labels, prob, day.groups)
        if name != "base":
            pooled[name]["vs_base"] = against_base(day.labels, base, prob, day.groups)
    headline = {
        name: within_slot(day, base, prob) for name, prob in predictions.items() if name != "base"
    }
    return ReplayResult(
        request=request,
        group_field=group_field(spec),
        rows=len(day.rows),
        clicks=int(day.labels.sum()),
        slots=slots,
        pooled=pooled,
        memory_bytes={name: adapter.memory_bytes() for name, adapter in adapters.items()},
        settings=asdict(spec.adapt),
        within_slot=headline,
        occupancy={
            name: adapter.occupancy()
            for name, adapter in adapters.items()
            if hasattr(adapter, "occupancy")
        },
    )
