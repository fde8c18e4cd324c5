"""The [serving] section: how `reloop serve` answers, explores and logs, and what runs after a
version is published for it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from reloop_cli.spec.adapt import SERVED_ADAPTERS
from reloop_cli.spec.checks import check

POLICIES = ("greedy", "epsilon", "softmax")
COLD_STARTS = ("refuse", "random")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
SECONDS_PER = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def duration_seconds(text: str) -> float:
    """'30m' -> 1800.0 ('s', 'm', 'h' or 'd' after a number); raises ValueError otherwise."""
    found = DURATION.match(str(text))
    if not found:
        raise ValueError(text)
    return float(found.group(1)) * SECONDS_PER[found.group(2)]


@dataclass(frozen=True)
class ServingSpec:
    """How the live version is served (docs/guides/serving.md)."""

    policy: str = (
        "greedy"  # which `slots` candidates a request is shown: greedy | epsilon | softmax
    )
    epsilon: float = 0.05  # epsilon: the share of slots filled at random (exploration)
    temperature: float = 0.1  # softmax: its temperature over the candidates' pCTR
    seed: int | None = None  # exploration draws; none: drawn at start, logged with the boot
    # Before any version is published: refuse (503), or serve at random and log it, so the
    # first version has logs to train on (a new surface's first day, as the simulator's day 0).
    cold_start: str = "refuse"
    # A field that holds the slot an item is shown in (the sample's `position`): candidates are
    # scored as if at the top (1), as a ranker does, and logged with the slot they were shown in.
    position_field: str = ""
    max_candidates: int = 1_000  # a request with more is refused (413)
    max_body_bytes: int = 1_000_000  # a body larger is refused (413)
    max_text_chars: int = 1_000  # one value's text longer is refused (422)
    flush_rows: int = 5_000  # impressions or clicks held in memory before they are written
    flush_seconds: float = 2.0  # ... or this long; a killed server loses at most this buffer
    reload_seconds: float = 2.0  # how often the server looks for a newly published version
    on_publish: str = ""  # a command run after each publish: {version}, {path}, {chain} filled in
    on_publish_timeout: float = 300.0
    keep_releases: int = 5  # published releases kept on disk (the live one always)
    # Correct the live version between retrains ([adapt] sets it): "" (off), intercept,
    # field_bias or reloop2 (docs/guides/adapting.md). Filled from /feedback once an
    # impression's attribution window closes; emptied when a new version goes live.
    adapter: str = ""
    adapter_pending_rows: int = 200_000  # shown impressions held for their labels, at most
    # Slow clients: a request's headers must arrive within header_timeout_seconds of its first
    # byte (or of the connection), its whole body within body_timeout_seconds (else 408).
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    # SIGTERM: requests in flight get this long to finish, then the buffered logs are written
    # (retried for as long again while writes fail): the server exits within twice this.
    shutdown_seconds: float = 10.0
    # Origins whose pages may write (/score, /feedback); a request from any other (a browser
    # page on the host) is refused, 403. Empty: no browser writes at all.
    allowed_origins: tuple[str, ...] = ()

    def validate(self) -> None:
        check(
            self.policy in POLICIES, "serving.policy", f"'{self.policy}' is not one of {POLICIES}"
        )
        check(0.0 <= self.epsilon <= 1.0, "serving.epsilon", f"{self.epsilon} is not in [0, 1]")
        check(
            self.cold_start in COLD_STARTS,
            "serving.cold_start",
            f"'{self.cold_start}' is not one of {COLD_STARTS}",
        )
        check(self.temperature > 0, "serving.temperature", "must be > 0")
        for key in ("max_candidates", "max_body_bytes", "max_text_chars", "flush_rows"):
            check(getattr(self, key) >= 1, f"serving.{key}", "must be >= 1")
        for key in (
            "flush_seconds",
            "reload_seconds",
            "on_publish_timeout",
            "header_timeout_seconds",
            "body_timeout_seconds",
            "shutdown_seconds",
        ):
            check(getattr(self, key) > 0, f"serving.{key}", "must be > 0")
        check(self.keep_releases >= 1, "serving.keep_releases", "must be >= 1")
        check(
            self.adapter in ("", *SERVED_ADAPTERS),
            "serving.adapter",
            f"'{self.adapter}' is not one of {SERVED_ADAPTERS} (or empty: off)",
        )
        check(self.adapter_pending_rows >= 1, "serving.adapter_pending_rows", "must be >= 1")
