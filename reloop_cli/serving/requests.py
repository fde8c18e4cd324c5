"""What a client may send, checked before anything is scored: every refusal is a 4xx with one line
that names the field (`candidates[3].item_id: ...`), and the server goes on serving.

    POST /score     {"request_id": "r1", "context": {"user_id": "u7", "hour": 9},
                     "candidates": [{"item_id": "i1"}, {"item_id": "i2"}], "slots": 1}
    POST /feedback  {"clicks": ["<impression id>", {"impression_id": "...", "time": 1.7e9}]}

A field may sit in `context` or in a candidate; a candidate's value wins. `time` (epoch seconds)
is accepted only from a server started with `--trust-client-time` (replaying logged traffic), and
only inside the days ingest would accept (`TimeBounds`): what the server answers 200 to, the next
nightly run must be able to read.

Malformed JSON of every kind is a 400 with one line of ours, never Python's: a number of more
digits than Python reads (4,300), nesting deeper than its parser goes, a lone UTF-16 surrogate
(`"\\ud800"`, valid JSON that no UTF-8 file can hold).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from reloop_cli.spec.data import DataSpec
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
    """The body as a JSON object, within `serving.max_body_bytes`; NaN and Infinity refused,
    and every string (keys too) one that UTF-8 can hold."""
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
    except RecursionError:
        raise RequestError(400, "body: nested too deeply to read") from None
    except ValueError:  # Python's own limit on integer digits, the one ValueError left here
        raise RequestError(400, "body: a number has too many digits to read") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "body: must be a JSON object")
    _refuse_surrogates(payload)
    return payload


def _no_constants(name: str) -> None:
    raise RequestError(400, f"body: {name} is not a JSON number")


def _refuse_surrogates(payload: dict) -> None:
    """A lone surrogate parses into a Python string that no UTF-8 log can hold: refuse it here,
    where the field can be named, rather than at the log writer an hour later."""
    stack: list[tuple[str, Any]] = [("body", payload)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            _utf8(where, value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _utf8(f"{where} key", key)
                stack.append((key if where == "body" else f"{where}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))


def _utf8(where: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            400, f"{where}: holds a lone UTF-16 surrogate, which is not text (send UTF-8)"
        ) from None


@dataclass(frozen=True)
class TimeBounds:
    """The epoch seconds a trusted client `time` may take: the days ingest accepts,
    [data.min_date, data.max_date] (by default the day after today), in the spec's zone."""

    data: DataSpec

    def check(self, where: str, value: float) -> float:
        low, high = self.seconds()
        if not low <= value < high:
            first, last = self.days()
            raise RequestError(
                422,
                f"{where}: {value:g} is outside the days the logs accept, {first}..{last} "
                "(data.min_date, data.max_date)",
            )
        return value

    def days(self) -> tuple[date, date]:
        zone = ZoneInfo(self.data.timezone)
        first = date.fromisoformat(self.data.min_date)
        if self.data.max_date is not None:
            return first, date.fromisoformat(self.data.max_date)
        return first, datetime.now(zone).date() + timedelta(days=1)

    def seconds(self) -> tuple[float, float]:
        zone = ZoneInfo(self.data.timezone)
        first, last = self.days()
        start = datetime.combine(first, time(), zone).timestamp()
        end = datetime.combine(last + timedelta(days=1), time(), zone).timestamp()
        return start, end


def parse_score(
    payload: dict, fields: tuple[str, ...], limits: ServingSpec, trust_time: TimeBounds | None
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
    return ScoreRequest(request_id, rows, slots, _time(payload, "time", trust_time), list(fields))


def _time(payload: dict, where: str, trusted: TimeBounds | None) -> float | None:
    """A client's `time`: only from a server that trusts it (`trusted` holds the days the logs
    accept), as finite epoch seconds inside them."""
    if "time" not in payload:
        return None
    if trusted is None:
        raise RequestError(
            422,
            f"{where}: this server sets the time; leave it out (a server started with "
            "--trust-client-time takes it, for replaying logged traffic)",
        )
    value = payload["time"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(422, f"{where}: must be epoch seconds (a number)")
    seconds = float(value) if abs(value) < 1e300 else math.inf
    if not math.isfinite(seconds):
        raise RequestError(422, f"{where}: must be epoch seconds (a finite number)")
    return trusted.check(where, seconds)


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
            if isinstance(item, int) and len(str(item)) > limits.max_text_chars:
                raise RequestError(
                    422,
                    f"{where}.{name}: a number of {len(str(item)):,} digits, over "
                    f"serving.max_text_chars {limits.max_text_chars:,}",
                )


def parse_feedback(payload: dict, trust_time: TimeBounds | None) -> list[tuple[str, float | None]]:
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
        parsed.append((click["impression_id"], _time(click, f"{where}.time", trust_time)))
    return parsed
