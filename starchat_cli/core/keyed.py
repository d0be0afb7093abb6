"""A small table in one JSON file: entries by key, atomic writes, a damaged file reads as empty.

The caches that remember what a machine taught us (the AMX probe's verdicts, the worker's
fallbacks after a crash, the drafted-decoding cost curves) are each one of these: losing the
file costs a re-measurement, never an error, and a write that fails is skipped the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starchat_cli.core.fsutil import atomic_write_text


class KeyedFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        """Every entry; ``{}`` when the file is missing, unreadable or not a JSON object."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _entry(self, key: str) -> dict[str, Any] | None:
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) else None

    def _put(self, key: str, entry: dict[str, Any]) -> bool:
        """Store ``entry`` under ``key`` (read, change, atomic rename); False when it cannot be written."""
        data = self._read()
        data[key] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError:
            return False
        return True

    def _clear(self) -> int:
        """Remove the file; how many entries it held."""
        n = len(self._read())
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        return n


__all__ = ["KeyedFile"]
