"""The serving core, free of HTTP: the live release, swapped between requests; scoring a request
with one version; choosing the shown slate; logging what was shown and what was clicked.

Hot swap: a thread looks at `serving/LIVE` every `serving.reload_seconds`; a new release is read
into memory beside the one serving, and only then does one reference change. A request takes
that reference once when it starts, so it is scored, chosen and logged by one version whole, and
none waits for or fails at a swap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from reloop_cli.adapt.keys import ProbabilityAndKey
from reloop_cli.evaluation import policies
from reloop_cli.serving.adapting import ServedAdapter
from reloop_cli.serving.encoder import RequestEncoder
from reloop_cli.serving.logs import (
    BOOTS,
    CLICKS,
    IMPRESSIONS,
    Flusher,
    ImpressionIds,
    LogWriter,
    new_boot_id,
)
from reloop_cli.serving.metrics import ServerMetrics
from reloop_cli.serving.release import Release, load_release, pointer
from reloop_cli.serving.requests import RequestError, ScoreRequest, TimeBounds
from reloop_cli.spec.pipeline import Spec

log = logging.getLogger("reloop")
# The server's own columns in the impression log, beside the spec's fields (a field may not
# take one of these names: `reloop serve` refuses such a spec).
SERVER_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String,
    "served_version": pl.Int64,
    "served_pctr": pl.Float64,
    "adapted_pctr": pl.Float64,
    "slot": pl.Int64,
    "propensity": pl.Float64,
}


@dataclass
class Live:
    """One loaded release, its encoder and its forward pass: what a request is scored with;
    with `serving.adapter` on, the adapter that corrects this release (and only this one)."""

    release: Release
    encoder: RequestEncoder
    forward: torch.jit.ScriptModule  # (categorical, dense) -> (pCTR, the adapter's key)
    adapter: ServedAdapter | None = None

    @property
    def version(self) -> int:
        return self.release.version

    def predict(self, categorical: torch.Tensor, dense: torch.Tensor) -> np.ndarray:
        return self.predict_with_keys(categorical, dense)[0]

    def predict_with_keys(
        self, categorical: torch.Tensor, dense: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            pctr, keys = self.forward(categorical, dense)
        return pctr.numpy().astype(np.float64), keys.numpy()


def load_live(serving_root: Path, name: str, spec: Spec | None = None) -> Live:
    """A release ready to serve. Its network is traced here, from the weights it was read
    with (no pickled program is loaded): the same arithmetic as the eager model, with less
    Python per call (100 rows: 142 us traced, 259 us eager; docs/guides/serving.md). With
    `spec.serving.adapter` set, an empty adapter for this release comes with it."""
    release = load_release(serving_root, name)
    encoder = RequestEncoder(
        release.spec, release.vocab, release.meta["field_sizes"], release.forms
    )
    example = encoder.encode([{}, {}])
    kind = spec.adapt.memory_key if spec is not None and spec.serving.adapter else "hidden"
    stats = release.key_stats if kind == "standardized" else None
    if kind == "standardized" and stats is None:
        # Published before releases kept them: serve on, with the unscaled key, and say so.
        log.warning(
            'release %s has no key statistics for adapt.memory_key = "standardized": its '
            'memory hashes the "preactivation" key; `reloop promote N` publishes it again '
            "with them",
            name,
        )
        kind = "preactivation"
    wrapped = ProbabilityAndKey(release.model.requires_grad_(False).eval(), kind, stats)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trace fixes this release's shapes, as it should
        forward = torch.jit.trace(wrapped, (example.categorical, example.dense))
        key_dim = int(forward(example.categorical, example.dense)[1].shape[1])
    adapter = None
    if spec is not None and spec.serving.adapter:
        seed = spec.serving.seed if spec.serving.seed is not None else 0
        adapter = ServedAdapter(spec, release.model, key_dim, seed, stats)
    return Live(release, encoder, forward, adapter)


@dataclass
class ServiceConfig:
    """Where the server reads and writes, and how it serves."""

    serving_root: Path  # the workspace's serving/ folder (releases, LIVE)
    log_dir: Path
    spec: Spec  # its [serving] settings and [data] time zone
    trust_client_time: bool = False
    seed: int | None = None
    # Writes (/score, /feedback) must carry `Authorization: Bearer <token>` when set
    # (RELOOP_SERVE_TOKEN); kept out of the spec, so it is never written to a boot file.
    token: str = field(default="", repr=False)

    @property
    def client_time(self) -> TimeBounds | None:
        """The days a trusted client `time` may fall on; None: the server sets the time."""
        return TimeBounds(self.spec.data) if self.trust_client_time else None


class Service:
    """Scores requests with the live release; logs impressions and clicks."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        settings = config.spec.serving
        self.boot = new_boot_id()
        self.seed = config.seed if config.seed is not None else settings.seed
        if self.seed is None:
            self.seed = int.from_bytes(bytes.fromhex(self.boot[:8]), "big")
        self.rng = np.random.default_rng(self.seed)
        self._rng_lock = threading.Lock()
        self.ids = ImpressionIds(self.boot)
        self.metrics = ServerMetrics()
        zone = config.spec.data.timezone
        self.impressions = LogWriter(
            config.log_dir,
            IMPRESSIONS,
            self.boot,
            zone,
            settings.flush_rows,
            settings.flush_seconds,
            impression_types(config.spec),
            observer=self.metrics,
        )
        self.clicks = LogWriter(
            config.log_dir,
            CLICKS,
            self.boot,
            zone,
            settings.flush_rows,
            settings.flush_seconds,
            observer=self.metrics,
        )
        self.flusher = Flusher([self.impressions, self.clicks], settings.flush_seconds)
        self.live: Live | None = None
        self.cold = RequestEncoder.without_vocabulary(config.spec)  # logs before any version
        self.metrics.watch_adapter(self._adapter_count, self._adapter_bytes, self._occupancy)
        self._stop = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch, name="reloop-release-watcher", daemon=True
        )
        self.policy = {
            "greedy": policies.Policy("epsilon", epsilon=0.0, slots=1),
            "epsilon": policies.Policy("epsilon", epsilon=settings.epsilon, slots=1),
            "softmax": policies.Policy("softmax", temperature=settings.temperature, slots=1),
        }[settings.policy]

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.reload()
        self._write_boot()
        self.flusher.start()
        self._watcher.start()

    def stop(self) -> int:
        """Write what is buffered and stop the threads (SIGTERM, Ctrl-C, the app's shutdown),
        retrying failed writes for up to `serving.shutdown_seconds`; returns the rows dropped."""
        self._stop.set()
        return self.flusher.stop(self.config.spec.serving.shutdown_seconds)

    def readiness(self) -> dict:
        """Whether this server should get traffic: a version to serve (or a random cold start)
        and logs that are being written; with the reasons it should not."""
        live = self.live
        cold = live is None and self.config.spec.serving.cold_start == "random"
        reasons = [] if live is not None or cold else ["no version is published yet"]
        for writer in (self.impressions, self.clicks):
            health = writer.health
            if health.failing:
                reasons.append(f"{writer.kind} log: writes failing ({health.last_error})")
        return {
            "ready": not reasons,
            "reasons": reasons,
            "version": live.version if live else None,
            "release": live.release.name if live else None,
            "cold_start": cold,  # serving at random until a version is published
            "adapter": self.config.spec.serving.adapter or None,
            # written: labelled impressions it learnt from; held: waiting for their window
            "adapter_rows": (
                {kind: self._adapter_count(kind) for kind in ("written", "held", "dropped")}
                if self.config.spec.serving.adapter
                else None
            ),
            "boot": self.boot,
            "buffered": {w.kind: len(w.rows) for w in (self.impressions, self.clicks)},
        }

    def _adapter_count(self, kind: str) -> int:
        adapter = self.live.adapter if self.live else None
        if adapter is None:
            return 0
        return len(adapter.held) if kind == "held" else getattr(adapter, kind)

    def _adapter_bytes(self) -> int:
        adapter = self.live.adapter if self.live else None
        return adapter.memory_bytes() if adapter is not None else 0

    def _occupancy(self) -> dict:
        adapter = self.live.adapter if self.live else None
        inner = adapter.adapter if adapter is not None else None
        return inner.occupancy() if hasattr(inner, "occupancy") else {}

    def _write_boot(self) -> None:
        folder = self.config.log_dir / BOOTS
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "boot": self.boot,
            "started": time.time(),
            "seed": self.seed,
            "serving": self.config.spec.to_dict()["serving"],
            "live_version": self.live.version if self.live else None,
        }
        tmp = folder / f".tmp-{self.boot}.part"
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        tmp.replace(folder / f"{self.boot}.json")

    def reload(self) -> bool:
        """Swap in the release LIVE names, if it is not the one serving; True when swapped."""
        named = pointer(self.config.serving_root)
        if named is None or (self.live and self.live.release.name == named["release"]):
            return False
        # beside the one serving; with an adapter, a fresh empty one (a new version is live)
        fresh = load_live(self.config.serving_root, named["release"], self.config.spec)
        before = self.live.version if self.live else None
        self.live = fresh  # one reference: a request in flight keeps the one it took
        self.metrics.swapped(fresh.version)
        log.info("serving v%d (release %s; was %s)", fresh.version, fresh.release.name, before)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.config.spec.serving.reload_seconds):
            try:
                self.reload()
            except Exception as error:  # a half-written or broken release: keep serving the old
                log.error("could not load the published release: %s", error)

    # --- requests ---------------------------------------------------------------------------
    def score(self, request: ScoreRequest) -> dict:
        live = self.live  # taken once: this request is one version's, whatever swaps meanwhile
        if live is None and self.config.spec.serving.cold_start != "random":
            raise RequestError(
                503, "no version is published yet; run `reloop run` or `reloop train`"
            )
        rows = self._with_top_position(request.rows)
        try:
            encoded = (live.encoder if live else self.cold).encode(rows)
        except ValueError as error:
            raise RequestError(422, f"candidates: {error}") from None
        now = request.time if request.time is not None else time.time()
        pctr = base = keys = None
        if live is not None:
            base, keys = live.predict_with_keys(encoded.categorical, encoded.dense)
            pctr = base
            if live.adapter is not None:
                pctr = live.adapter.predict(base, keys, encoded.logged, now)
        request_id = request.request_id or self.ids.take(1)[0]
        ids = self.ids.take(len(rows))
        slate = self._slate(pctr, len(rows), request.slots) if request.slots else None
        self._log(live, request_id, now, ids, base, pctr, encoded.logged, slate)
        if live is not None and live.adapter is not None:
            shown = slate[0] if slate is not None else np.arange(len(ids))
            live.adapter.hold(
                [ids[c] for c in shown],
                base[shown],
                keys[shown],
                {name: [values[c] for c in shown] for name, values in encoded.logged.items()},
                now,
            )

        def served(candidate: int) -> float | None:
            return float(pctr[candidate]) if pctr is not None else None

        answer = {
            "request_id": request_id,
            "version": live.version if live else None,
            "release": live.release.name if live else None,
            "candidates": [{"impression_id": i, "pctr": served(c)} for c, i in enumerate(ids)],
        }
        if slate is not None:
            answer["slate"] = [
                {
                    "candidate": int(c),
                    "impression_id": ids[c],
                    "position": position,
                    "pctr": served(int(c)),
                    "propensity": float(p),
                }
                for position, (c, p) in enumerate(zip(*slate, strict=True), start=1)
            ]
        return answer

    def _with_top_position(self, rows: list[dict]) -> list[dict]:
        """Candidates as a ranker scores them: at the top slot (`serving.position_field`)."""
        position = self.config.spec.serving.position_field
        return [{**row, position: 1} for row in rows] if position else rows

    def _slate(
        self, pctr: np.ndarray | None, candidates: int, slots: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(candidate indices shown, their propensities), by the serving policy; uniformly at
        random before any version is published (cold start)."""
        if pctr is None:
            policy, scores = policies.random_policy(slots), np.zeros((1, candidates))
        else:
            policy = policies.Policy(
                self.policy.kind, self.policy.epsilon, self.policy.temperature, slots
            )
            scores = pctr[None, :]
        with self._rng_lock:
            shown, propensity = policies.serve(policy, scores, self.rng)
        return shown[0], propensity[0]

    def _log(self, live, request_id, now, ids, pctr, adapted, logged, slate) -> None:
        """The shown impressions (every candidate when no slots were asked), as trained on:
        `served_pctr` is the version's own prediction (tomorrow's ỹ_last), `adapted_pctr`
        what the adapter made of it and the request was answered with (null when off)."""
        corrected = live is not None and live.adapter is not None
        position = self.config.spec.serving.position_field
        picks = (
            [(int(c), slot, float(p)) for slot, (c, p) in enumerate(zip(*slate, strict=True), 1)]
            if slate is not None
            else [(c, None, None) for c in range(len(ids))]
        )
        rows = []
        for candidate, slot, propensity in picks:
            row = {name: values[candidate] for name, values in logged.items()}
            if position and slot is not None:
                row[position] = str(slot) if isinstance(row.get(position), str) else slot
            row.update(
                impression_id=ids[candidate],
                request_id=request_id,
                ts=now,
                served_version=live.version if live else None,
                served_pctr=float(pctr[candidate]) if pctr is not None else None,
                adapted_pctr=float(adapted[candidate]) if corrected else None,
                slot=slot,
                propensity=propensity,
            )
            rows.append(row)
        self.impressions.append(rows)

    def feedback(self, clicks: list[tuple[str, float | None]]) -> int:
        now = time.time()
        timed = [(i, t if t is not None else now) for i, t in clicks]
        self.clicks.append([{"impression_id": i, "ts": t} for i, t in timed])
        live = self.live
        if live is not None and live.adapter is not None and timed:
            live.adapter.click(timed)
        return len(clicks)


def impression_types(spec: Spec) -> dict[str, pl.DataType]:
    """The impression log's column types: the server's own columns, and each field as ingest
    reads it (a categorical as text, a numeric as a float, tags as a list of text)."""
    data = spec.data
    return {
        **SERVER_COLUMNS,
        **{name: pl.String for name in data.categorical},
        **{name: pl.Float64 for name in data.numeric},
        **{name: pl.List(pl.String) for name in data.multivalued},
    }
