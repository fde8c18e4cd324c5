"""Small validators every spec section shares: each failure is one line naming the setting."""

from __future__ import annotations

import codecs
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reloop_cli.errors import BadInput


def check(condition: bool, where: str, message: str) -> None:
    """Refuse a setting: `where` names it (`train.window_days`), `message` says what is wrong."""
    if not condition:
        raise BadInput(f"{where}: {message}")


def is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except (TypeError, ValueError):
        return False
    return len(text) == 10


def is_time_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        return False
    return True


def is_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True
