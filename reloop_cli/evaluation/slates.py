"""Logged slates in a workspace, and a version's online CTR estimated off-policy from them.

Off-policy evaluation needs more than the shown rows: for each request, every candidate the
policy chose from, the slot each shown one took, and the propensity it was shown with. A
workspace holds them as `reloop simulate --closed-loop` writes them (and a serving system can
write them the same way):

    slates/policy.json             the logging policy (kind, epsilon, temperature, slots)
    slates/day=D/*.parquet         request_id, candidate, slot (null: not shown), and the fields
                                   the model reads, one row per candidate
    logs/day=D/                    the shown rows, with request_id, position, click, propensity
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from reloop_cli.columns import IMPRESSION_ID, LABEL, PCTR, PROPENSITY, REQUEST_ID
from reloop_cli.errors import BadInput
from reloop_cli.evaluation import offpolicy, policies, statistics
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version
from reloop_cli.versions.score import predict_frame


def has_slates(ws: Workspace, day: str) -> bool:
    return any(ws.slate_dir(day).glob("*.parquet"))


def logging_policy(ws: Workspace) -> policies.Policy:
    path = ws.slate_policy_path
    if not path.exists():
        raise BadInput(f"{path}: no logging policy recorded; off-policy evaluation needs it")
    return policies.Policy(**json.loads(path.read_text(encoding="utf-8")))


class LoggedDay:
    """One day's slates as arrays: [requests, candidates] rows to score, [requests, slots] shown
    candidates, clicks and logging propensities (only requests in `requests`, if given)."""

    def __init__(self, ws: Workspace, day: str, requests: set[str] | None = None) -> None:
        if not has_slates(ws, day):
            raise BadInput(f"{ws.root}: no logged slates for {day} (slates/day={day}/)")
        self.policy = logging_policy(ws)
        slates = pl.read_parquet(ws.slate_dir(day) / "*.parquet")
        if requests is not None:
            slates = slates.filter(pl.col(REQUEST_ID).is_in(list(requests)))
        self.rows = slates.sort(REQUEST_ID, "candidate")
        sizes = self.rows.group_by(REQUEST_ID).len()["len"].unique()
        if sizes.len() != 1:
            raise BadInput(f"slates/day={day}: requests have different numbers of candidates")
        self.candidates = int(sizes[0])
        self.requests = self.rows.height // self.candidates
        shown = (
            self.rows.filter(pl.col("slot").is_not_null())
            .select(REQUEST_ID, "candidate", pl.col("slot").cast(pl.Int64))
            .sort(REQUEST_ID, "slot")
        )
        logs = (
            ws.scan_logs([day])
            .select(REQUEST_ID, pl.col("position").cast(pl.Int64).alias("slot"), LABEL, PROPENSITY)
            .collect()
        )
        shown = shown.join(logs, on=[REQUEST_ID, "slot"], how="left", maintain_order="left")
        slots = self.policy.slots
        if shown.height != self.requests * slots or shown[PROPENSITY].null_count():
            raise BadInput(f"{day}: logged rows and slates do not line up (slots, propensities)")
        self.shown = shown["candidate"].to_numpy().reshape(self.requests, slots)
        self.clicks = shown[LABEL].to_numpy().reshape(self.requests, slots).astype(np.float64)
        self.propensity = shown[PROPENSITY].to_numpy().reshape(self.requests, slots)

    def scores(self, ws: Workspace, version: int) -> np.ndarray:
        """[requests, candidates] pCTR of a version on every candidate."""
        rows = self.rows.with_columns(
            pl.format("{}:{}", pl.col(REQUEST_ID), pl.col("candidate")).alias(IMPRESSION_ID)
        )
        scored = predict_frame(load_version(ws, version), ws, rows.lazy())
        return scored[PCTR].to_numpy().astype(np.float64).reshape(self.requests, self.candidates)

    def estimate(
        self, ws: Workspace, version: int, clip: float = offpolicy.DEFAULT_CLIP
    ) -> offpolicy.OffPolicyEstimate:
        """The version's online CTR under the logging policy's kind, estimated from the logs."""
        target = policies.logged_probabilities(self.policy, self.scores(ws, version), self.shown)
        return offpolicy.estimate(self.clicks, self.propensity, target, clip)

    def observed(self) -> statistics.Estimate:
        """The logging policy's own CTR on these requests (per-request clicks, normal interval)."""
        return statistics.mean_estimate(self.clicks.mean(axis=1))
