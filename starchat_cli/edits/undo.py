"""The undo journal: every file starchat writes can be put back as it was, even after a restart.

The journal lives under the data dir (``undo/journal.jsonl``, one JSON line per write and
one per undo, append-only) with the previous bytes of each file beside it (``ID.bak``).
A line that is not a whole, valid record (torn by a crash, not UTF-8, edited by hand) is
skipped, not an error; a write whose saved copy is gone cannot be undone and is dropped
with a refusal naming the file; a journal that cannot be used at all is one error line.

    journal = UndoJournal()
    journal.record(plan, previous, after)   # before the write (edits.apply.apply_edit does it)
    journal.undo()                          # the newest write, put back
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starchat_cli.core.errors import StarchatError
from starchat_cli.core.fsutil import DISK_FULL, atomic_write_bytes, writing
from starchat_cli.core.paths import get_paths
from starchat_cli.core.records import BadRecord, flag, load, number, text
from starchat_cli.edits.errors import EditError, FileChangedError, NothingToUndoError
from starchat_cli.edits.plan import EditPlan
from starchat_cli.edits.textfile import snapshot

_ID = r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}"  # also the saved copy's file name: no "/" or ".."
_SHA256 = r"[0-9a-f]{64}"
_LATEST = 1e11  # seconds: a write time past this (year 5138) is damage, not a date


@dataclass(frozen=True)
class JournalEntry:
    id: str
    path: str
    existed: bool
    backup: str  # file holding the previous bytes ("" when the file did not exist)
    after_sha256: str
    time: float
    summary: str

    @property
    def restorable(self) -> bool:
        """False when the file existed before and its saved copy is gone."""
        return not self.existed or Path(self.backup).is_file()


def _parse_write(rec: dict[str, Any], folder: Path) -> JournalEntry:
    """A write record, every field checked once (BadRecord: skipped as damaged).

    The saved copy is always ``ID.bak`` in the journal's folder, whatever the line says, so a
    damaged line can never make undo read, or delete, a file elsewhere.
    """
    ident = text(rec, "id", pattern=_ID)
    path = text(rec, "path")
    if not os.path.isabs(path) or "\0" in path:
        raise BadRecord(f"path {path[:40]!r} is not an absolute path")
    existed = flag(rec, "existed")
    backup = text(rec, "backup")
    if existed != bool(backup) or (backup and Path(backup).name != f"{ident}.bak"):
        raise BadRecord(f"backup {backup[:40]!r} does not match existed={existed} and id {ident}")
    return JournalEntry(
        id=ident,
        path=path,
        existed=existed,
        backup=str(folder / f"{ident}.bak") if existed else "",
        after_sha256=text(rec, "after_sha256", pattern=_SHA256),
        time=number(rec, "time", high=_LATEST),
        summary=text(rec, "summary"),
    )


class UndoJournal:
    """Writes made by starchat, newest last, with the previous bytes kept on disk.

    ``journal.jsonl`` gets one line per write and one per undo, so it is append-only
    and a crash never leaves it half rewritten.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = Path(directory) if directory is not None else get_paths().data_dir / "undo"
        self.file = self.dir / "journal.jsonl"

    def _read(self, what: str) -> list[JournalEntry]:
        try:
            data = self.file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._unusable(exc, what) from None
        entries: dict[str, JournalEntry] = {}
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                rec = load(raw)
                if "undone" in rec:
                    entries.pop(text(rec, "undone", pattern=_ID), None)
                else:
                    entry = _parse_write(rec, self.dir)
                    entries[entry.id] = entry
            except BadRecord:
                continue  # a torn last line after a crash, or a line damaged on disk
        return list(entries.values())

    def entries(self) -> list[JournalEntry]:
        """Writes that can still be undone, oldest first (see ``restorable``)."""
        return self._read("nothing listed")

    def _unusable(self, exc: OSError, what: str) -> StarchatError:
        """The one-line error for a journal that cannot be read or appended to."""
        if exc.errno in DISK_FULL:
            return StarchatError(
                f"disk full while writing the undo journal {self.file}: {what}; free some space and try again"
            )
        fresh = "move it away and starchat starts a new journal"
        if self.file.is_dir():
            return EditError(f"the undo journal {self.file} is a folder, not a file: {what}; {fresh}")
        for folder in (self.dir, *self.dir.parents):
            if folder.exists() and not folder.is_dir():
                return EditError(f"the undo folder {folder} is a file, not a folder: {what}; {fresh}")
        reason = (exc.strerror or type(exc).__name__).lower()
        return EditError(
            f"cannot use the undo journal {self.file} ({reason}): {what}; fix its permissions or {fresh}"
        )

    def _append(self, record: dict, what: str) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.file, "a+b") as fh:
                # After a crash mid-line, start on a fresh line: the torn one stays skipped alone.
                torn = fh.tell() > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
                fh.write((("\n" if torn else "") + json.dumps(record) + "\n").encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise self._unusable(exc, what) from None

    def record(self, plan: EditPlan, previous: bytes | None, after: bytes) -> JournalEntry:
        """Journal a write before it is made; an unusable journal refuses it (nothing written)."""
        what = f"{plan.display_path} not written"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.file.is_dir():
                raise IsADirectoryError(errno.EISDIR, "Is a directory", str(self.file))
        except OSError as exc:
            raise self._unusable(exc, what) from None
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
        try:
            self._append(entry.__dict__, what)
        except StarchatError:
            if backup:
                Path(backup).unlink(missing_ok=True)
            raise
        return entry

    def undo(self, *, force: bool = False) -> JournalEntry:
        """Restore the file of the newest write; refused if the file changed since (unless forced)."""
        entries = self._read("nothing undone")
        if not entries:
            raise NothingToUndoError("nothing to undo: starchat has not written any file")
        entry = entries[-1]
        path = Path(entry.path)
        previous = self._previous(entry)
        try:
            current = snapshot(path)
        except OSError as exc:
            state = "is a folder now" if path.is_dir() else f"cannot be read ({exc.strerror or exc})"
            raise EditError(f"{path} {state}: not undone; move it away, then undo again") from None
        if not force and current.sha256 != entry.after_sha256:
            raise FileChangedError(
                f"{path} changed after starchat wrote it: not undone (its content would be lost)"
            )
        if previous is not None:
            atomic_write_bytes(path, previous)
        elif path.exists():
            with writing(path):
                path.unlink()
        self._append({"undone": entry.id}, f"{path} was undone but the journal still lists it")
        if entry.backup:
            Path(entry.backup).unlink(missing_ok=True)
        return entry

    def _previous(self, entry: JournalEntry) -> bytes | None:
        """The saved previous bytes (None: the write created the file).

        A saved copy that is gone can never be restored: that write is dropped from the
        journal (the file is left as it is), so the next undo reaches the write before it.
        """
        if not entry.existed:
            return None
        try:
            return Path(entry.backup).read_bytes()
        except FileNotFoundError:
            self._append({"undone": entry.id, "dropped": "saved copy missing"}, "nothing undone")
            raise EditError(
                f"cannot undo the write to {entry.path}: its saved copy {entry.backup} is gone; "
                "the file is left as it is and this write is dropped from the journal "
                "(undo again to reach the write before it)"
            ) from None
        except OSError as exc:
            raise EditError(
                f"cannot read {entry.backup}, the saved copy of {entry.path} "
                f"({(exc.strerror or type(exc).__name__).lower()}): not undone; fix its permissions"
            ) from None
