"""Numeric options that are not settings (``--port``, ``--limit``...): their ranges, checked at parse time.

    port: int = typer.Option(8080, "--port", callback=number("port"))

Settings (``--ctx``, ``--temperature``...) are checked by their own options (cli/options.py),
from the settings model. This module imports no pydantic, so ``doctor --help`` stays light.
"""

from __future__ import annotations

from typing import Any, Callable

import typer

# (smallest, largest) allowed, None = no bound.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "port": (1, 65535),
    "max_tokens_limit": (1, None),
    "max_body": (1, None),
    "limit": (1, None),
    "quantize_threads": (0, None),  # 0 = every core
    "doctor_ctx": (64, None),
}


def number(key: str) -> Callable[[Any, Any], Any]:
    """A parse-time check for the numeric option ``key`` of :data:`LIMITS`: out of range is a
    ConfigError (exit 3) naming the option."""
    lo, hi = LIMITS[key]

    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is None or ((lo is None or value >= lo) and (hi is None or value <= hi)):
            return value
        from starchat_cli.core.errors import ConfigError

        flag = max(param.opts, key=len) if param.opts else f"--{key}"
        if hi is None:
            raise ConfigError(f"option {flag} must be >= {lo}, not {value}")
        raise ConfigError(f"option {flag} must be from {lo} to {hi}, not {value}")

    return check


__all__ = ["LIMITS", "number"]
