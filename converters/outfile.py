"""The output file of a conversion, invisible until it is complete.

On Linux the data goes to an unnamed file (``O_TMPFILE``) in the target's folder and is
linked into place only when complete: a run killed with SIGKILL leaves nothing to see, the
kernel frees the blocks. Libraries that open a path (the gguf writer, llama.cpp's
quantizer) get ``/proc/self/fd/N``, which opens that same unnamed file. Where the OS has no
``O_TMPFILE``, the data goes to a hidden
``.starchat-tmp-PID-*.part`` file beside the target that the next conversion in that folder
removes once process PID is gone.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from converters.errors import OutOfSpaceError, OutputPathError

TMP_PREFIX = ".starchat-tmp-"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def default_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` would give a new file (0666 & ~umask)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def sweep(folder: Path) -> list[Path]:
    """Remove the temp files of conversions in ``folder`` whose process has died; what was removed."""
    removed: list[Path] = []
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
    except OSError:
        return removed
    for path in names:
        pid_text = path.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or (int(pid_text) != os.getpid() and _alive(int(pid_text))):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def output_failure(out: Path, exc: OSError) -> Exception:
    """The converters' error for an OSError while writing ``out``."""
    if exc.errno in DISK_FULL:
        return OutOfSpaceError(f"disk full while writing {out}: free some space and try again")
    return OutputPathError(out, exc)


def check_target(out: Path) -> None:
    """Refuse a folder where the file goes; create the parent folder, or say why it cannot be."""
    if out.is_dir():
        raise OutputPathError(out, IsADirectoryError(errno.EISDIR, "it is a folder: name a .gguf file"))
    try:
        if out.parent.exists() and not out.parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a part of the path is a file, not a folder")
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_failure(out, exc) from None


class PendingOutput:
    """``out`` while it is written: ``path`` is where to write, ``commit()`` puts it in place."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.fd: int | None = None
        self.named: Path | None = None
        folder = out.parent
        sweep(folder)
        tmpfile = getattr(os, "O_TMPFILE", None)
        if tmpfile is not None:
            try:
                self.fd = os.open(folder, tmpfile | os.O_RDWR, 0o600)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise output_failure(out, exc) from None
                self.fd = None  # this filesystem has no unnamed files: the named fallback
        if self.fd is not None and os.path.exists(f"/proc/self/fd/{self.fd}"):
            self.path = Path(f"/proc/self/fd/{self.fd}")
            return
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=".part", dir=folder)
        except OSError as exc:
            raise output_failure(out, exc) from None
        os.close(fd)
        self.named = Path(name)
        self.path = self.named

    @property
    def unnamed(self) -> bool:
        return self.fd is not None

    def commit(self) -> None:
        """fsync, take the usual permissions, and appear under ``out`` in one step."""
        try:
            if self.fd is not None:
                os.fsync(self.fd)
                os.fchmod(self.fd, default_mode())
                # link(2) cannot replace: link under a hidden name, then rename over the target.
                link = self.out.with_name(f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.link")
                proc = os.open("/proc/self/fd", os.O_RDONLY)
                try:
                    os.link(str(self.fd), link, src_dir_fd=proc, follow_symlinks=True)
                finally:
                    os.close(proc)
                try:
                    os.replace(link, self.out)
                except BaseException:
                    link.unlink(missing_ok=True)
                    raise
                os.close(self.fd)
                self.fd = None
            else:
                assert self.named is not None
                with open(self.named, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.chmod(self.named, default_mode())
                os.replace(self.named, self.out)
                self.named = None
        except OSError as exc:
            raise output_failure(self.out, exc) from None

    def discard(self) -> None:
        """Drop what was written (the unnamed file vanishes with its descriptor)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        if self.named is not None:
            self.named.unlink(missing_ok=True)
            self.named = None
