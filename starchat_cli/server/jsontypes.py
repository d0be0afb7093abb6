"""JSON types as OpenAI's API checks them, and the 400 that names a field of the wrong type.

    check_type(data.get("stream"), (BOOLEAN,), "stream")   # "stream": "false" is a 400 naming it

A boolean must be a JSON boolean, a number a JSON number (not a string, not a boolean), an
integer a number with no fraction (``3.0`` passes, as in JSON Schema, which OpenAI validates
with; ``3.5`` does not), and ``null`` is "not given".
"""

from __future__ import annotations

from typing import Any

from .errors import APIError

# JSON types, named as in OpenAI's errors.
BOOLEAN, INTEGER, NUMBER, STRING, ARRAY, OBJECT = "boolean", "integer", "number", "string", "array", "object"

_ARTICLE = {INTEGER: "an integer", ARRAY: "an array", OBJECT: "an object"}


def json_type(value: Any) -> str:
    """The JSON type of a decoded value; integral floats count as integers too (see below)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return "decimal number"
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return ARRAY
    return OBJECT


def _fits(value: Any, allowed: tuple[str, ...]) -> bool:
    got = json_type(value)
    if got == "null" or got in allowed:
        return True
    if got == INTEGER and NUMBER in allowed:
        return True
    if got == "decimal number":
        return NUMBER in allowed or (INTEGER in allowed and float(value).is_integer())
    return False


def check_type(value: Any, allowed: tuple[str, ...], name: str, param: str | None = None) -> None:
    """A 400 naming ``name`` unless ``value`` is null or one of the ``allowed`` JSON types."""
    if _fits(value, allowed):
        return
    expected = " or ".join(_ARTICLE.get(t, f"a {t}") for t in allowed)
    got = json_type(value)
    raise APIError(
        400,
        f"Invalid type for '{name}': expected {expected}, but got {_ARTICLE.get(got, f'a {got}')} instead.",
        code="invalid_type",
        param=param or name,
    )


__all__ = ["ARRAY", "BOOLEAN", "INTEGER", "NUMBER", "OBJECT", "STRING", "check_type", "json_type"]
