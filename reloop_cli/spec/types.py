"""Every spec setting checked for its type when the spec is read, by pydantic in strict mode, with
the key, the value and what is allowed in one line.

TOML and RELOOP_<SECTION>_<KEY> variables give text, numbers, booleans, lists and tables; a
setting of the wrong kind (`embedding_dim = "eight"`, `hidden_units = "16,8"`, `memory_arrays =
1.5`, `gate.min_clicks = "20"`) used to pass the reader and fail deep inside a command as a
TypeError. Strict mode takes no text for a number and no true for a whole number; a whole number
is a number, and a list is read as the tuple the section holds. The ranges each section allows
are then checked by its own `validate`.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from reloop_cli.errors import BadInput


@functools.cache
def _hints(section: type) -> dict[str, Any]:
    return typing.get_type_hints(section)


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def check_types(section: type, values: dict[str, Any], where: str) -> None:
    """Refuse the first value in `values` that is not of its field's type in `section`."""
    hints = _hints(section)
    for key, value in values.items():
        try:
            _adapter(hints[key]).validate_python(value, strict=True)
        except ValidationError:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise BadInput(f"{where} {key} = {shown}: must be {describe(hints[key])}") from None


def describe(annotation: Any) -> str:
    """A type as a person reads it: `tuple[int, ...]` -> 'a list of whole numbers'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None)]
        empty = " (or left out)" if type(None) in args else ""
        return " or ".join(named) + empty
    if origin is tuple:
        return f"a list of {_plural(args[0])}"
    if origin is dict or annotation is dict:
        return "a table { name = value }"
    return {
        int: "a whole number",
        float: "a number",
        str: "text (in quotes)",
        bool: "true or false",
    }.get(annotation, str(annotation))


def _plural(annotation: Any) -> str:
    return {int: "whole numbers", float: "numbers", str: "texts (in quotes)"}.get(
        annotation, describe(annotation)
    )
