"""A text file as starchat edits it: bytes -> text and back without changing anything else.

Reading keeps what a rewrite must reproduce: the encoding (UTF-8 with or without BOM,
UTF-16 with BOM, else Latin-1, which maps every byte to one character), the line endings
(CRLF stays CRLF) and a :class:`Snapshot` (mtime, size, sha256) to tell later whether the
file changed on disk. Binary files are refused.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starchat_cli.chat.edit_errors import BinaryFileError, EditError


@dataclass(frozen=True)
class Snapshot:
    """What the file looked like when the diff was made."""

    exists: bool
    mtime_ns: int = 0
    size: int = 0
    sha256: str = ""


def snapshot(path: Path) -> Snapshot:
    """The file's snapshot now (``exists=False`` when there is no file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Snapshot(False)
    return Snapshot(True, st.st_mtime_ns, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())


@dataclass(frozen=True)
class TextFile:
    text: str  # with "\n" line endings
    encoding: str  # a codec name that round-trips the bytes (utf-8-sig keeps the BOM)
    newline: str  # "\n" or "\r\n"
    snapshot: Snapshot


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


def read_text_file(path: Path) -> TextFile:
    """The file's text with ``\n`` line endings, plus what writing it back must keep."""
    data = path.read_bytes()
    text, encoding = decode_file(data, str(path))
    crlf = text.count("\r\n")
    newline = "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"
    snap = Snapshot(True, path.stat().st_mtime_ns, len(data), hashlib.sha256(data).hexdigest())
    return TextFile(text.replace("\r\n", "\n"), encoding, newline, snap)
