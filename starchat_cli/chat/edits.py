"""Putting a code block from a reply into a file, safely.

    plan = plan_edit("app.py", code, "after", anchor="import os")  # nothing written yet
    print(plan.diff())                                              # show it, ask the user
    apply_edit(plan, UndoJournal())                                 # atomic; refused if the file changed
    UndoJournal().undo()                                            # restores the previous content

Rules: every write is atomic (temp file + rename) and keeps the file's permissions,
encoding (UTF-8 with or without BOM, UTF-16 with BOM, else Latin-1 byte for byte) and
line endings (CRLF stays CRLF). Binary files are refused. A file that changed on disk
after its diff was shown (mtime, size or content hash differ) is refused. Paths outside
the working directory need ``allow_outside=True`` (the face asks the user first). The
undo journal lives under the data dir, so ``/undo`` works after a restart.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from starchat_cli.core.errors import StarchatError
from starchat_cli.core.fsutil import atomic_write_bytes
from starchat_cli.core.paths import get_paths

Mode = Literal["new", "insert", "after", "append", "replace", "range"]
MODES: tuple[str, ...] = ("new", "insert", "after", "append", "replace", "range")
MODE_HELP = {
    "new": "save as a new file",
    "insert": "insert before line N",
    "after": "insert after the line matching an anchor",
    "append": "append at the end",
    "replace": "replace the whole file",
    "range": "replace lines A-B",
}


class EditError(StarchatError):
    """An edit that cannot be made; the message says why and what to do."""


class BinaryFileError(EditError):
    pass


class FileChangedError(EditError):
    pass


class OutsideRootError(EditError):
    pass


class NothingToUndoError(EditError):
    pass


# -- reading a file as it is ---------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the file looked like when the diff was made."""

    exists: bool
    mtime_ns: int = 0
    size: int = 0
    sha256: str = ""


def snapshot(path: Path) -> Snapshot:
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
    if encoding == "utf-8-sig":
        return codecs.BOM_UTF8 + text.encode("utf-8")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        raise EditError(
            f"the code has characters the file's encoding ({encoding}) cannot hold: convert the file to UTF-8 first"
        ) from None


def read_text_file(path: Path) -> TextFile:
    data = path.read_bytes()
    text, encoding = decode_file(data, str(path))
    crlf = text.count("\r\n")
    newline = "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"
    snap = Snapshot(True, path.stat().st_mtime_ns, len(data), hashlib.sha256(data).hexdigest())
    return TextFile(text.replace("\r\n", "\n"), encoding, newline, snap)


# -- paths ---------------------------------------------------------------------------------


def resolve_target(path: str | os.PathLike[str], root: Path | None = None) -> tuple[Path, bool]:
    """The absolute target (symlinks resolved) and whether it lies inside ``root`` (default: cwd)."""
    root = (root or Path.cwd()).resolve()
    raw = Path(os.path.expanduser(os.fspath(path)))
    target = (raw if raw.is_absolute() else root / raw).resolve()
    try:
        target.relative_to(root)
        inside = True
    except ValueError:
        inside = False
    return target, inside


# -- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditPlan:
    path: Path
    mode: str
    old_text: str  # "\n" line endings
    new_text: str
    encoding: str
    newline: str
    snapshot: Snapshot
    inside_root: bool
    display_path: str

    @property
    def creates(self) -> bool:
        return not self.snapshot.exists

    def new_bytes(self) -> bytes:
        return encode_text(self.new_text.replace("\n", self.newline), self.encoding)

    def diff(self, context: int = 3) -> str:
        name = self.display_path
        return "".join(
            difflib.unified_diff(
                self.old_text.splitlines(keepends=True),
                self.new_text.splitlines(keepends=True),
                fromfile="/dev/null" if self.creates else f"a/{name}",
                tofile=f"b/{name}",
                n=context,
            )
        )

    def summary(self) -> str:
        old = len(self.old_text.splitlines())
        new = len(self.new_text.splitlines())
        verb = "create" if self.creates else "change"
        return f"{verb} {self.display_path}: {old} → {new} lines ({MODE_HELP[self.mode]})"


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def find_anchor(lines: list[str], anchor: str) -> int:
    """Index of the line matching ``anchor``: an exact (stripped) match first, else a unique substring."""
    want = anchor.strip()
    if not want:
        raise EditError("the anchor is empty: give the text of the line to insert after")
    exact = [i for i, line in enumerate(lines) if line.strip() == want]
    if exact:
        return exact[0]
    partial = [i for i, line in enumerate(lines) if want in line]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise EditError(f"no line matches the anchor {want!r}")
    shown = ", ".join(str(i + 1) for i in partial[:5])
    raise EditError(f"the anchor {want!r} matches lines {shown}: make it longer, or insert at a line number")


def parse_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:[-:,]\s*(\d+))?\s*", text or "")
    if not m:
        raise EditError(f"bad line range {text!r}: write A-B, e.g. 10-20")
    a = int(m.group(1))
    b = int(m.group(2) or a)
    return a, b


def plan_edit(
    path: str | os.PathLike[str],
    code: str,
    mode: str,
    *,
    line: int | None = None,
    anchor: str | None = None,
    line_range: tuple[int, int] | None = None,
    root: Path | None = None,
    allow_outside: bool = False,
) -> EditPlan:
    """What the file would become; nothing is written. Raises EditError with the reason."""
    if mode not in MODES:
        raise EditError(f"unknown insert mode {mode!r}: one of {', '.join(MODES)}")
    if not os.fspath(path).strip():
        raise EditError("no file name given")
    target, inside = resolve_target(path, root)
    if not inside and not allow_outside:
        raise OutsideRootError(f"{target} is outside the working directory {(root or Path.cwd()).resolve()}")
    try:
        display = str(target.relative_to((root or Path.cwd()).resolve()))
    except ValueError:
        display = str(target)
    code = code.replace("\r\n", "\n")
    if code and not code.endswith("\n"):
        code += "\n"
    if target.is_dir():
        raise EditError(f"{display} is a directory: give a file name")
    if not target.exists():
        if mode not in ("new", "append", "replace"):
            raise EditError(f"{display} does not exist: save the block as a new file instead")
        return EditPlan(target, "new", "", code, "utf-8", "\n", Snapshot(False), inside, display)
    if mode == "new":
        raise EditError(f"{display} already exists: choose another name, or insert into it")
    try:
        current = read_text_file(target)
    except PermissionError:
        raise EditError(f"cannot read {display}: permission denied") from None
    lines = _lines(current.text)
    if mode == "append":
        new = lines + [code]
    elif mode == "replace":
        new = [code]
    elif mode == "insert":
        if line is None or not 1 <= line <= len(lines) + 1:
            raise EditError(f"line must be between 1 and {len(lines) + 1} for {display}")
        new = lines[: line - 1] + [code] + lines[line - 1 :]
    elif mode == "after":
        at = find_anchor(lines, anchor or "")
        new = lines[: at + 1] + [code] + lines[at + 1 :]
    else:  # range
        if line_range is None:
            raise EditError("give the line range to replace, e.g. 10-20")
        a, b = line_range
        if not (1 <= a <= b <= len(lines)):
            raise EditError(f"line range {a}-{b} is outside {display} (lines 1-{len(lines)})")
        new = lines[: a - 1] + [code] + lines[b:]
    new_text = "".join(new)
    if current.text and not current.text.endswith("\n") and mode in ("insert", "after", "range"):
        # Keep a file that had no final newline without one (unless the block was appended).
        if new_text.endswith("\n") and new[-1] is not code:
            new_text = new_text[:-1]
    return EditPlan(
        target,
        mode,
        current.text,
        new_text,
        current.encoding,
        current.newline,
        current.snapshot,
        inside,
        display,
    )


# -- applying and undoing ---------------------------------------------------------------------


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_unchanged(plan: EditPlan) -> None:
    now = snapshot(plan.path)
    if now != plan.snapshot:
        if not plan.snapshot.exists:
            raise FileChangedError(
                f"{plan.display_path} was created by something else after the preview: nothing written"
            )
        if not now.exists:
            raise FileChangedError(f"{plan.display_path} was deleted after the preview: nothing written")
        raise FileChangedError(
            f"{plan.display_path} changed on disk after the diff was shown: nothing written; preview it again"
        )


@dataclass(frozen=True)
class JournalEntry:
    id: str
    path: str
    existed: bool
    backup: str  # file holding the previous bytes ("" when the file did not exist)
    after_sha256: str
    time: float
    summary: str


class UndoJournal:
    """Writes made by starchat, newest last, with the previous bytes kept on disk.

    ``journal.jsonl`` gets one line per write and one per undo, so it is append-only
    and a crash never leaves it half rewritten.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = Path(directory) if directory is not None else get_paths().data_dir / "undo"
        self.file = self.dir / "journal.jsonl"

    def _read(self) -> list[JournalEntry]:
        if not self.file.exists():
            return []
        entries: dict[str, JournalEntry] = {}
        for raw in self.file.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
            if "undone" in rec:
                entries.pop(rec["undone"], None)
            else:
                entries[rec["id"]] = JournalEntry(**rec)
        return list(entries.values())

    def entries(self) -> list[JournalEntry]:
        """Writes that can still be undone, oldest first."""
        return self._read()

    def _append(self, record: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def record(self, plan: EditPlan, previous: bytes | None, after: bytes) -> JournalEntry:
        self.dir.mkdir(parents=True, exist_ok=True)
        entry_id = f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        backup = ""
        if previous is not None:
            backup_path = self.dir / f"{entry_id}.bak"
            atomic_write_bytes(backup_path, previous)
            backup = str(backup_path)
        entry = JournalEntry(
            entry_id,
            str(plan.path),
            previous is not None,
            backup,
            hashlib.sha256(after).hexdigest(),
            time.time(),
            plan.summary(),
        )
        self._append(entry.__dict__)
        return entry

    def undo(self, *, force: bool = False) -> JournalEntry:
        """Restore the file of the newest write; refused if the file changed since (unless forced)."""
        entries = self._read()
        if not entries:
            raise NothingToUndoError("nothing to undo: starchat has not written any file")
        entry = entries[-1]
        path = Path(entry.path)
        current = snapshot(path)
        if not force and current.sha256 != entry.after_sha256:
            raise FileChangedError(
                f"{path} changed after starchat wrote it: not undone (its content would be lost)"
            )
        if entry.existed:
            atomic_write_bytes(path, Path(entry.backup).read_bytes())
        elif path.exists():
            path.unlink()
        self._append({"undone": entry.id})
        if entry.backup:
            Path(entry.backup).unlink(missing_ok=True)
        return entry


def apply_edit(plan: EditPlan, journal: UndoJournal | None = None) -> JournalEntry | None:
    """Write the plan atomically after checking the file is as it was when the diff was shown."""
    check_unchanged(plan)
    data = plan.new_bytes()
    previous = plan.path.read_bytes() if plan.snapshot.exists else None
    entry = journal.record(plan, previous, data) if journal is not None else None
    atomic_write_bytes(plan.path, data)
    if previous is None:
        os.chmod(plan.path, _default_mode())  # the temp file was private (0600)
    return entry


# -- file names suggested by the reply ---------------------------------------------------------

_PATHLIKE = r"[\w.\-/~]*[\w\-]\.[A-Za-z0-9_]{1,10}|[\w.\-/~]*(?:Makefile|Dockerfile|Rakefile|Gemfile)"
_COMMENT_NAME = re.compile(
    r"^\s*(?:#|//|--|;|/\*|<!--|%)\s*(?:file(?:name)?|path)\s*:\s*(" + _PATHLIKE + r")", re.I
)
_BEFORE_FENCE = re.compile(
    r"^\s*(?:#+\s*)?(?:[-*]\s*)?(?:\*\*|__)?(?:(?:file(?:name)?|path|in|save (?:it )?as|create)\s*:?\s*)?"
    r"[`*_]*(" + _PATHLIKE + r")[`*_]*\s*:?\s*(?:\*\*|__)?\s*$",
    re.I,
)
_INFO_NAME = re.compile(r"(?:title|file(?:name)?|path)=[\"']?(" + _PATHLIKE + r")", re.I)


def _clean(name: str) -> str | None:
    name = name.strip().strip("`'\"")
    if not name or name.startswith("/") or ".." in Path(name).parts or name.startswith("~"):
        return None  # only relative names inside the working tree are suggested
    if re.fullmatch(r"\d+(\.\d+)+", name):
        return None  # a version number, not a file
    return name


def suggest_filename(reply: str, block_start_line: int, code: str, info: str = "") -> str | None:
    """A file name the reply proposes for the block starting at ``block_start_line``, or None.

    Looks at a ``# file: app.py`` style comment on the block's first line, a
    ``title=app.py`` in the info string, and a path alone on the line just before the fence.
    """
    first = code.splitlines()[0] if code.strip() else ""
    m = _COMMENT_NAME.match(first)
    if m and (name := _clean(m.group(1))):
        return name
    m = _INFO_NAME.search(info)
    if m and (name := _clean(m.group(1))):
        return name
    for word in info.split()[1:]:
        if re.fullmatch(_PATHLIKE, word) and (name := _clean(word)):
            return name
    lines = reply.splitlines()
    i = block_start_line - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i >= 0:
        m = _BEFORE_FENCE.match(lines[i])
        if m and (name := _clean(m.group(1))):
            return name
    return None


__all__ = [
    "MODES",
    "MODE_HELP",
    "BinaryFileError",
    "EditError",
    "EditPlan",
    "FileChangedError",
    "JournalEntry",
    "NothingToUndoError",
    "OutsideRootError",
    "UndoJournal",
    "apply_edit",
    "check_unchanged",
    "decode_file",
    "find_anchor",
    "parse_range",
    "plan_edit",
    "read_text_file",
    "resolve_target",
    "snapshot",
    "suggest_filename",
]
