"""Byte sizes as people read them, and the free disk space at a path.

One formatter serves every message starchat prints about sizes:

    format_bytes(98_400_000)             -> "98.4 MB"   (decimal, the unit that keeps it under 1000)
    format_bytes(23_085_449_216, "GiB")  -> "21.5 GiB"  (a fixed unit: memory, offload plans)
    format_bytes(123_456_789, "GB", 2)   -> "0.12 GB"   (a fixed unit and precision: downloads)

and one measure of free space (:func:`free_bytes`, :func:`disk_usage_at`) that also
works for a folder not created yet: it asks the first existing parent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from starchat_cli.core.errors import StarchatError

KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4
KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4

UNITS: dict[str, int] = {
    "B": 1,
    "KB": KB,
    "MB": MB,
    "GB": GB,
    "TB": TB,
    "KiB": KIB,
    "MiB": MIB,
    "GiB": GIB,
    "TiB": TIB,
}
_AUTO = ("B", "KB", "MB", "GB", "TB")


def format_bytes(n: float, unit: str | None = None, digits: int = 1) -> str:
    """``n`` bytes as text: in ``unit`` (a key of :data:`UNITS`) with ``digits`` decimals,
    or, without a unit, in the largest decimal unit up to TB that keeps the number under
    1000 (plain bytes have no decimals: ``"512 B"``)."""
    if unit is not None:
        try:
            size = UNITS[unit]
        except KeyError:
            raise ValueError(f"unknown unit {unit!r}: one of {', '.join(UNITS)}") from None
        return f"{n / size:.{digits}f} {unit}"
    name = _AUTO[0]
    for bigger in _AUTO[1:]:
        if abs(n) < 1000:
            break
        n /= 1000
        name = bigger
    return f"{n:.0f} B" if name == "B" else f"{n:.{digits}f} {name}"


def existing_parent(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it exists, else its nearest existing parent (at worst the root)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


def disk_usage_at(path: str | os.PathLike[str]) -> DiskUsage:
    """Total, used and free bytes of the filesystem that holds (or would hold) ``path``.

    Raises OSError when even the existing parent cannot be measured."""
    return DiskUsage(*shutil.disk_usage(existing_parent(path)))


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem that holds (or would hold) ``path``."""
    return disk_usage_at(path).free


def ensure_free_space(
    needed: int,
    where: str | os.PathLike[str],
    *,
    margin: int = 0,
    purpose: str = "needed",
    advice: str = "free some space",
    unit: str = "GB",
    digits: int = 2,
) -> None:
    """Raise StarchatError unless ``where`` has room for ``needed`` bytes plus ``margin``.

    The message names both numbers, e.g. ``not enough disk space in /models: 9.86 GB to
    download (+0.27 GB margin) but 1.20 GB free; free some space``."""
    free = free_bytes(where)
    if needed + margin <= free:
        return

    def size(n: int) -> str:
        return format_bytes(n, unit, digits)

    extra = f" (+{size(margin)} margin)" if margin else ""
    raise StarchatError(
        f"not enough disk space in {where}: {size(needed)} {purpose}{extra} but {size(free)} free; {advice}"
    )
