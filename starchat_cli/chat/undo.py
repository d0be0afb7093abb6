"""The undo journal: every file starchat writes can be put back as it was, even after a restart.

The journal lives under the data dir (``undo/journal.jsonl``, one JSON line per write and
one per undo, append-only) with the previous bytes of each file beside it. A torn last
line after a crash is skipped, not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starchat_cli.chat.edit_errors import FileChangedError, NothingToUndoError
from starchat_cli.chat.textfile import snapshot
from starchat_cli.core.fsutil import atomic_write_bytes
from starchat_cli.core.paths import get_paths

if TYPE_CHECKING:
    from starchat_cli.chat.edits import EditPlan


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
        with open(self.file, "a+b") as fh:
            # After a crash mid-line, start on a fresh line: the torn one stays skipped alone.
            torn = fh.tell() > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
            fh.write((("\n" if torn else "") + json.dumps(record) + "\n").encode("utf-8"))
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
