"""Atomic file writes: every file starchat writes goes through a temp file and a rename."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from starchat_cli.core.errors import OutputError, StarchatError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# errno -> why the path cannot be written, and what to do. The one table for every command
# that writes a file the user named (export, convert, quantize, pull, cache, the TUI's /save).
_REASONS = {
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose a path inside a folder",
    errno.EISDIR: "it is a folder: name a file",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "not permitted: choose a folder you can write to",
    errno.EROFS: "read-only filesystem: choose a writable folder",
    errno.ENOENT: "the folder does not exist and cannot be created here (a pseudo filesystem?): choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter one",
    errno.ELOOP: "too many symbolic links: choose another path",
    errno.ETXTBSY: "the file is in use: choose another name",
    errno.EEXIST: "something else exists there: choose another path",
    errno.EINVAL: "not a valid name on this filesystem: choose another name",
    errno.ENOTSUP: "this filesystem does not hold files (a pseudo filesystem?): choose another path",
}


def output_error(path: str | os.PathLike[str], exc: OSError) -> StarchatError:
    """The one-line error for ``exc`` raised while writing ``path`` (which the user named).

    Only ENOSPC/EDQUOT are "disk full" (exit 1); every other reason (not a folder, a folder,
    read-only, permission) is an :class:`OutputError` (exit 12) naming the path and the reason.
    """
    where = Path(path)
    if exc.errno in DISK_FULL:
        return StarchatError(f"disk full while writing {where}: free some space and try again")
    code = exc.errno or 0
    blocker = _file_on_the_way(where)
    if code in (errno.ENOTDIR, errno.EEXIST) and blocker is not None:
        return OutputError(
            f"cannot write {where}: {blocker} is a file, not a folder: choose a path inside a folder"
        )
    reason = _REASONS.get(code) or (exc.strerror or type(exc).__name__).lower()
    return OutputError(f"cannot write {where}: {reason}")


def _file_on_the_way(path: Path) -> Path | None:
    """The nearest parent of ``path`` that exists and is not a folder (``mkdir -p`` trips on it)."""
    for parent in path.parents:
        try:
            if parent.exists():
                return None if parent.is_dir() else parent
        except OSError:
            return None
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an :class:`OSError` raised inside the block into :func:`output_error` for ``path``."""
    try:
        yield
    except StarchatError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from None


def ensure_folder(folder: str | os.PathLike[str], *, named: str | os.PathLike[str] | None = None) -> Path:
    """``mkdir -p folder``, or the :func:`output_error` for ``named`` (default: the folder)."""
    target = Path(folder)
    with writing(named if named is not None else target):
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
        target.mkdir(parents=True, exist_ok=True)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one.

    The temp file sits beside the target (same filesystem, so the rename is atomic), is
    fsynced before the rename, and takes the existing file's permission bits. On any
    failure the temp file is removed and the original is left untouched.
    """
    target = Path(path)
    with writing(target):
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = None
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, StarchatError):
            raise output_error(target, exc) from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))
