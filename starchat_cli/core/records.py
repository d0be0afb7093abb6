"""Checks for the records starchat reads back from its own files (journal lines, JSON side files).

A file on disk can hold anything: a line cut by a crash, bytes that are not UTF-8, JSON of
another shape (edited by hand, written by another version), absurd numbers (``1e400``,
``NaN``, a size of -1). Each record type has one function that reads every field it uses
through these checks, once; the first bad field raises :class:`BadRecord` naming it, and the
caller skips or removes the record. JSON's ``true`` is never taken for 1, nor 2.5 for an int.

    rec = load(raw_bytes)                          # a dict, or BadRecord
    size = integer(rec, "size", high=1 << 62)      # an int in 0..2**62, not a bool, not 1e400
    name = text(rec, "model", default="")
"""

from __future__ import annotations

import json
import re
from typing import Any

_REQUIRED: Any = object()


class BadRecord(ValueError):
    """A record, or one of its fields, that is not what starchat writes."""


def load(raw: bytes | str) -> dict[str, Any]:
    """The JSON object in ``raw``; anything else (not UTF-8, not JSON, not an object) is BadRecord."""
    try:
        obj = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise BadRecord("not UTF-8") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[… nested deeper than the stack
        raise BadRecord(f"not JSON ({str(exc)[:60]})") from None
    if not isinstance(obj, dict):
        raise BadRecord(f"a JSON {type(obj).__name__}, not an object")
    return obj


def _field(rec: dict[str, Any], name: str, default: Any) -> Any:
    if name in rec:
        return rec[name]
    if default is _REQUIRED:
        raise BadRecord(f"{name} missing")
    return default


def _bad(name: str, value: Any, want: str) -> BadRecord:
    shown = repr(value)
    return BadRecord(f"{name} {shown[:40]}{'…' if len(shown) > 40 else ''} is not {want}")


def text(rec: dict[str, Any], name: str, *, pattern: str | None = None, default: Any = _REQUIRED) -> str:
    """A string (matching ``pattern`` in full, when given)."""
    value = _field(rec, name, default)
    if not isinstance(value, str) or (pattern is not None and re.fullmatch(pattern, value) is None):
        raise _bad(name, value, "a string" if pattern is None else f"a string like {pattern}")
    return value


def flag(rec: dict[str, Any], name: str, *, default: Any = _REQUIRED) -> bool:
    """``true`` or ``false`` (not 0 or 1)."""
    value = _field(rec, name, default)
    if not isinstance(value, bool):
        raise _bad(name, value, "true or false")
    return value


def integer(rec: dict[str, Any], name: str, *, low: int = 0, high: int, default: Any = _REQUIRED) -> int:
    """An int in ``low..high`` (not a bool, not a float)."""
    value = _field(rec, name, default)
    if type(value) is not int or not low <= value <= high:
        raise _bad(name, value, f"an integer in {low}..{high}")
    return value


def number(
    rec: dict[str, Any], name: str, *, low: float = 0.0, high: float, default: Any = _REQUIRED
) -> float:
    """A finite number in ``low..high`` (an int or a float, not a bool; NaN and 1e400 are out)."""
    value = _field(rec, name, default)
    if type(value) not in (int, float) or not low <= value <= high:  # NaN fails every comparison
        raise _bad(name, value, f"a number in {low:g}..{high:g}")
    return float(value)


def integers(rec: dict[str, Any], name: str, *, low: int = 0, high: int, min_len: int = 0) -> list[int]:
    """A list of at least ``min_len`` ints, each in ``low..high``."""
    value = _field(rec, name, _REQUIRED)
    if (
        not isinstance(value, list)
        or len(value) < min_len
        or not all(type(v) is int and low <= v <= high for v in value)
    ):
        raise _bad(name, value, f"a list of at least {min_len} integers in {low}..{high}")
    return value


__all__ = ["BadRecord", "flag", "integer", "integers", "load", "number", "text"]
