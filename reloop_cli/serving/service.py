"""The serving core, free of HTTP: the live release, swapped between requests; scoring a request
with one version; choosing the shown slate; logging what was shown and what was clicked.

Hot swap: a thread looks at `serving/LIVE` every `serving.reload_seconds`; a new release is read
into memory beside the one serving, and only then does one reference change. A request takes
that reference once when it starts, so it is scored, chosen and logged by one version whole, and
none waits for or fails at a swap.

Experiments: while `serving/CANDIDATE` names one, a request is routed by its unit to the live or
the candidate arm (or scored by the candidate in shadow) and every impression is logged with the
experiment, stage, arm and unit (`serving/arms.py`); the candidate swaps the same way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reloop_cli.errors import BadInput
from reloop_cli.evaluation import policies
from reloop_cli.serving.arms import (
    ARM_MODES,
    CANDIDATE_ARM,
    LIVE_ARM,
    ArmPointer,
    in_candidate,
    read_candidate,
    unit_of,
)
from reloop_cli.serving.encoder import RequestEncoder
from reloop_cli.serving.impressions import NO_EXPERIMENT, Assignment, impression_types, shown_rows
from reloop_cli.serving.live import Live, load_live
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
from reloop_cli.serving.release import pointer
from reloop_cli.serving.requests import RequestError, ScoreRequest, TimeBounds
from reloop_cli.spec.pipeline import Spec

log = logging.getLogger("reloop")


@dataclass(frozen=True)
class Trial:
    """A running experiment as the server holds it: the pointer and the candidate, loaded."""

    pointer: ArmPointer
    candidate: Live


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
        self.trial: Trial | None = None  # a running experiment's candidate (serving/arms.py)
        self.trial_error: str | None = None  # why serving/CANDIDATE could not be read
        experiment = config.spec.experiment
        self.unit_field = experiment.unit or config.spec.adapt.group_field
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
            # a running experiment as this server routes it (serving/CANDIDATE), else None
            "experiment": (
                {**self.trial.pointer.to_dict(), "unit": self.unit_field or "request"}
                if self.trial is not None
                else None
            ),
            "experiment_error": self.trial_error,
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
        """Swap in the release LIVE names, if it is not the one serving, and the experiment
        CANDIDATE names; True when the live version swapped."""
        named = pointer(self.config.serving_root)
        swapped = False
        if named is not None and not (self.live and self.live.release.name == named["release"]):
            # beside the one serving; with an adapter, a fresh empty one (a new version is live)
            fresh = load_live(self.config.serving_root, named["release"], self.config.spec)
            before = self.live.version if self.live else None
            self.live = fresh  # one reference: a request in flight keeps the one it took
            self.metrics.swapped(fresh.version)
            log.info("serving v%d (release %s; was %s)", fresh.version, fresh.release.name, before)
            swapped = True
        self._reload_trial()
        return swapped

    def _reload_trial(self) -> None:
        """Follow `serving/CANDIDATE`: load a new candidate beside the live one, take a new
        share or stage as it is, drop the arm when the experiment ended."""
        try:
            named = read_candidate(self.config.serving_root)
        except BadInput as error:  # a damaged pointer: live alone, said once, shown in /health
            if self.trial_error != str(error):
                log.error("%s; serving live alone", error)
            self.trial_error, self.trial = str(error), None
            return
        self.trial_error = None
        current = self.trial
        if named is None or named.mode not in ARM_MODES:
            if current is not None:
                log.info("experiment %s ended: live only", current.pointer.experiment)
            self.trial = None
            return
        if current is not None and current.pointer == named:
            return
        if current is not None and current.pointer.release == named.release:
            candidate = current.candidate  # a new share or stage: the same loaded candidate
        else:
            candidate = load_live(self.config.serving_root, named.release, self.config.spec)
        self.trial = Trial(named, candidate)
        log.info(
            "experiment %s: v%d as %s at share %.3f (stage %d)",
            named.experiment,
            named.version,
            named.mode,
            named.share,
            named.stage,
        )

    def _watch(self) -> None:
        while not self._stop.wait(self.config.spec.serving.reload_seconds):
            try:
                self.reload()
            except Exception as error:  # a half-written or broken release: keep serving the old
                log.error("could not load the published release: %s", error)

    # --- requests ---------------------------------------------------------------------------
    def score(self, request: ScoreRequest) -> dict:
        # taken once: this request is one version's, whatever swaps meanwhile
        live, trial = self.live, self.trial
        if live is None and self.config.spec.serving.cold_start != "random":
            raise RequestError(
                503, "no version is published yet; run `reloop run` or `reloop train`"
            )
        rows = self._with_top_position(request.rows)
        request_id = request.request_id or self.ids.take(1)[0]
        serving, assignment, shadowing = self._arm(live, trial, rows, request_id)
        try:
            encoded = (serving.encoder if serving else self.cold).encode(rows)
            shadow_input = shadowing.encoder.encode(rows) if shadowing else None
        except ValueError as error:
            raise RequestError(422, f"candidates: {error}") from None
        now = request.time if request.time is not None else time.time()
        pctr = base = keys = shadow = None
        if serving is not None:
            base, keys = serving.predict_with_keys(encoded.categorical, encoded.dense)
            pctr = base
            if serving.adapter is not None:
                pctr = serving.adapter.predict(base, keys, encoded.logged, now)
        if shadowing is not None:  # scored, logged, never shown
            shadow = shadowing.predict(shadow_input.categorical, shadow_input.dense)
        ids = self.ids.take(len(rows))
        slate = self._slate(pctr, len(rows), request.slots) if request.slots else None
        logged = shown_rows(
            self.config.spec,
            version=serving.version if serving else None,
            request_id=request_id,
            now=now,
            ids=ids,
            pctr=base,
            adapted=pctr if serving is not None and serving.adapter is not None else None,
            logged=encoded.logged,
            slate=slate,
            assignment=assignment,
            shadow=shadow,
        )
        self.impressions.append(logged)
        if assignment.arm is not None:
            self.metrics.arm_request(assignment.arm)
        if serving is not None and serving.adapter is not None:
            shown = slate[0] if slate is not None else np.arange(len(ids))
            serving.adapter.hold(
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
            "version": serving.version if serving else None,
            "release": serving.release.name if serving else None,
            "candidates": [{"impression_id": i, "pctr": served(c)} for c, i in enumerate(ids)],
        }
        if assignment.experiment is not None:
            answer["experiment"] = {"id": assignment.experiment, "arm": assignment.arm}
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

    def _arm(
        self, live: Live | None, trial: Trial | None, rows: list[dict], request_id: str
    ) -> tuple[Live | None, Assignment, Live | None]:
        """(the version that answers, the request's assignment, a version scoring it in
        shadow): live alone when no experiment runs."""
        if trial is None or live is None:
            return live, NO_EXPERIMENT, None
        arm = trial.pointer
        unit = unit_of(rows, self.unit_field, request_id)
        if arm.mode == "shadow":
            return live, Assignment(arm.experiment, arm.stage, LIVE_ARM, unit), trial.candidate
        chosen = in_candidate(arm.experiment, unit, arm.share)
        name = CANDIDATE_ARM if chosen else LIVE_ARM
        assignment = Assignment(arm.experiment, arm.stage, name, unit)
        return (trial.candidate if chosen else live), assignment, None

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

    def feedback(self, clicks: list[tuple[str, float | None]]) -> int:
        now = time.time()
        timed = [(i, t if t is not None else now) for i, t in clicks]
        self.clicks.append([{"impression_id": i, "ts": t} for i, t in timed])
        trial = self.trial
        for arm in (self.live, trial.candidate if trial else None):
            if arm is not None and arm.adapter is not None and timed:
                arm.adapter.click(timed)  # each arm's adapter marks the impressions it holds
        return len(clicks)
