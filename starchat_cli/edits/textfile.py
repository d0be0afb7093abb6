"""A text file as starchat edits it: bytes -> text and back without changing anything else.

    data, st = read_regular(Path("app.py"), "app.py")  # refused: a FIFO, a device, a folder, no access
    f = read_text_file(Path("app.py"))                  # text with "\n", encoding, newline, snapshot

Reading keeps what a rewrite must reproduce: the bytes as read, the encoding (UTF-8 with or
without BOM, UTF-16 with BOM, else Latin-1, which maps every byte to one character), the line
endings (CRLF stays CRLF) and a :class:`Snapshot` (mtime, size, sha256) to tell later whether
the file changed on disk. Binary files are refused; so is anything that is not a regular file,
before it is opened (a named pipe blocks the open until a writer comes, /dev/zero never ends).
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from starchat_cli.edits.errors import BinaryFileError, EditError, UnreadableFileError


@dataclass(frozen=True)
class Snapshot:
    """What the file looked like when the diff was made."""

    exists: bool
    mtime_ns: int = 0
    size: int = 0
    sha256: str = ""


def snapshot(path: Path) -> Snapshot:
    """The file's snapshot now (``exists=False`` when there is no file).

    Something that is no longer a readable regular file gets no hash, so it never equals
    the snapshot of the file that was read (and reading it cannot block).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return Snapshot(False)
    if not stat.S_ISREG(st.st_mode):
        return Snapshot(True, st.st_mtime_ns, st.st_size)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        digest = ""
    return Snapshot(True, st.st_mtime_ns, st.st_size, digest)


# -- reading only regular files --------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_irregular(mode: int, name: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise UnreadableFileError(f"{name} is a directory: give a file")
    kind = next((word for test, word in _KINDS if test(mode)), "a special file")
    raise UnreadableFileError(
        f"{name} is {kind}, not a regular file: give a regular file (save it to one first)"
    )


def regular_file(path: Path, name: str) -> os.stat_result | None:
    """``path``'s stat when it is a regular file, None when nothing is there.

    Refused (:class:`UnreadableFileError`, exit 6) without opening it: a directory, a named
    pipe, a device, a socket, or a path through a folder the user may not search.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise UnreadableFileError(
            f"cannot read {name}: permission denied on a folder of its path (you may not search it): "
            "get access to that folder, or give a file you can reach"
        ) from None
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {name}: {exc.strerror or exc}") from None
    _refuse_irregular(st.st_mode, name)
    return st


def read_regular(path: Path, name: str) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file ``path`` and its stat, or an :class:`UnreadableFileError`."""
    if regular_file(path, name) is None:
        raise UnreadableFileError(f"cannot read {name}: no such file")
    # O_NONBLOCK: should a pipe take the file's place after the check, the open still returns
    # (and is refused below) instead of waiting for a writer. It changes nothing for a file.
    flags = (
        os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UnreadableFileError(f"cannot read {name}: no such file") from None
    except PermissionError:
        raise UnreadableFileError(
            f"cannot read {name}: permission denied (you may not read it): get read access, "
            "or give a file you can read"
        ) from None
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        _refuse_irregular(st.st_mode, name)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks), st


@dataclass(frozen=True)
class TextFile:
    text: str  # with "\n" line endings
    encoding: str  # a codec name that round-trips the bytes (utf-8-sig keeps the BOM)
    newline: str  # "\n" or "\r\n"
    snapshot: Snapshot
    data: bytes = field(default=b"", repr=False)  # the bytes as read (a patch must apply to them)


def looks_binary(data: bytes) -> bool:
    """A NUL byte in the first 8 KiB, unless a UTF-16 BOM explains it."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    return b"\x00" in data[:8192]


def decode_file(data: bytes, name: str = "file") -> tuple[str, str]:
    """(text, encoding) of a text file's bytes; binary data raises BinaryFileError."""
    if looks_binary(data):
        raise BinaryFileError(f"{name} is a binary file: starchat only edits text files")
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"  # every byte maps to one character: lossless


def encode_text(text: str, encoding: str) -> bytes:
    """``text`` as bytes in the encoding :func:`decode_file` found; EditError if it cannot hold it."""
    if encoding == "utf-8-sig":
        return codecs.BOM_UTF8 + text.encode("utf-8")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        raise EditError(
            f"the code has characters the file's encoding ({encoding}) cannot hold: convert the file to UTF-8 first"
        ) from None


def read_text_file(path: Path, name: str | None = None) -> TextFile:
    """The file's text with ``\n`` line endings, plus what writing it back must keep.

    ``name`` is how messages call the file (default: the path).
    """
    data, st = read_regular(path, name or str(path))
    text, encoding = decode_file(data, name or str(path))
    crlf = text.count("\r\n")
    newline = "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"
    snap = Snapshot(True, st.st_mtime_ns, len(data), hashlib.sha256(data).hexdigest())
    return TextFile(text.replace("\r\n", "\n"), encoding, newline, snap, data)
