"""What a client may send, checked before anything is scored: every refusal is a 4xx with one line
that names the field (`candidates[3].item_id: ...`), and the server goes on serving.

    POST /score     {"request_id": "r1", "context": {"user_id": "u7", "hour": 9},
                     "candidates": [{"item_id": "i1"}, {"item_id": "i2"}], "slots": 1}
    POST /feedback  {"clicks": ["<impression id>", {"impression_id": "...", "time": 1.7e9}]}

A field may sit in `context` or in a candidate; a candidate's value wins. `time` (epoch seconds)
is accepted only from a server started with `--trust-client-time` (replaying logged traffic).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from reloop_cli.spec.serving import ServingSpec

SCORE_KEYS = ("request_id", "context", "candidates", "slots", "time")
MAX_ID_CHARS = 200
MAX_CLICKS = 10_000


class RequestError(Exception):
    """A request refused: its HTTP status and the one line that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ScoreRequest:
    request_id: str | None
    rows: list[dict[str, Any]]  # one per candidate: context laid under the candidate's fields
    slots: int | None
    time: float | None
    fields: list[str] = field(default_factory=list)


def read_json(body: bytes, limits: ServingSpec) -> dict:
    """The body as a JSON object, within `serving.max_body_bytes`; NaN and Infinity refused."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(
            413, f"body: {len(body):,} bytes, over serving.max_body_bytes {limits.max_body_bytes:,}"
        )
    try:
        payload = json.loads(body, parse_constant=_no_constants)
    except RequestError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" (line {error.lineno}, column {error.colno})" if hasattr(error, "lineno") else ""
        raise RequestError(400, f"body: not valid JSON{where}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "body: must be a JSON object")
    return payload


def _no_constants(name: str) -> None:
    raise RequestError(400, f"body: {name} is not a JSON number")


def parse_score(
    payload: dict, fields: tuple[str, ...], limits: ServingSpec, trust_time: bool
) -> ScoreRequest:
    """The /score request, or a `RequestError` naming what is wrong."""
    unknown = sorted(set(payload) - set(SCORE_KEYS))
    if unknown:
        raise RequestError(400, f"{unknown[0]}: unknown field (known: {', '.join(SCORE_KEYS)})")
    request_id = payload.get("request_id")
    if request_id is not None and not _short_text(request_id):
        raise RequestError(422, f"request_id: must be a string of at most {MAX_ID_CHARS} chars")
    context = payload.get("context", {})
    if not isinstance(context, dict):
        raise RequestError(422, "context: must be an object of field values")
    _check_values(context, "context", fields, limits)
    candidates = payload.get("candidates")
    if candidates is None:
        raise RequestError(422, "candidates: missing (a list of objects, one per item to score)")
    if not isinstance(candidates, list):
        raise RequestError(422, "candidates: must be a list of objects")
    if not candidates:
        raise RequestError(422, "candidates: empty; give at least one item to score")
    if len(candidates) > limits.max_candidates:
        most = limits.max_candidates
        raise RequestError(
            413, f"candidates: {len(candidates):,}, over serving.max_candidates {most:,}"
        )
    rows = []
    for index, candidate in enumerate(candidates):
        where = f"candidates[{index}]"
        if not isinstance(candidate, dict):
            raise RequestError(422, f"{where}: must be an object of field values")
        _check_values(candidate, where, fields, limits)
        rows.append({**context, **candidate})
    slots = payload.get("slots")
    if slots is not None and (
        isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= len(rows)
    ):
        raise RequestError(422, f"slots: must be a whole number in 1..{len(rows)} (the candidates)")
    return ScoreRequest(request_id, rows, slots, _time(payload, trust_time), list(fields))


def _time(payload: dict, trust_time: bool) -> float | None:
    if "time" not in payload:
        return None
    if not trust_time:
        raise RequestError(
            422, "time: this server sets the time (start it with --trust-client-time)"
        )
    value = payload["time"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(422, "time: must be epoch seconds (a number)")
    return float(value)


def _short_text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def _check_values(values: dict, where: str, fields: tuple[str, ...], limits: ServingSpec) -> None:
    for name, value in values.items():
        if name not in fields:
            raise RequestError(
                422, f"{where}.{name}: no such field in the spec (fields: {', '.join(fields)})"
            )
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str) and len(item) > limits.max_text_chars:
                raise RequestError(
                    422,
                    f"{where}.{name}: {len(item):,} characters, over serving.max_text_chars "
                    f"{limits.max_text_chars:,}",
                )
            if isinstance(item, dict | list):
                raise RequestError(422, f"{where}.{name}: a value is a string, number or list")


def parse_feedback(payload: dict, trust_time: bool) -> list[tuple[str, float | None]]:
    """(impression id, time or None) per click of a /feedback body."""
    unknown = sorted(set(payload) - {"clicks"})
    if unknown:
        raise RequestError(400, f"{unknown[0]}: unknown field (known: clicks)")
    clicks = payload.get("clicks")
    if not isinstance(clicks, list) or not clicks:
        raise RequestError(422, "clicks: must be a non-empty list of impression ids")
    if len(clicks) > MAX_CLICKS:
        raise RequestError(413, f"clicks: {len(clicks):,}, over {MAX_CLICKS:,} a request")
    parsed = []
    for index, click in enumerate(clicks):
        where = f"clicks[{index}]"
        if isinstance(click, str):
            click = {"impression_id": click}
        if not isinstance(click, dict) or not _short_text(click.get("impression_id")):
            raise RequestError(422, f"{where}: an impression id (string) or an object with one")
        extra = sorted(set(click) - {"impression_id", "time"})
        if extra:
            raise RequestError(400, f"{where}.{extra[0]}: unknown field")
        parsed.append((click["impression_id"], _time(click, trust_time)))
    return parsed
