"""Writes that survive crashes: the atomic write's temp file beside its target, a torn journal line.

Both are invisible while things go well, so each test makes the failure that the design
guards against happen: a system temp dir that cannot be used (a rename from there would
cross filesystems), and a crash in the middle of appending to the undo journal.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from starchat_cli.core import fsutil
from starchat_cli.edits.apply import apply_edit
from starchat_cli.edits.plan import plan_edit
from starchat_cli.edits.undo import UndoJournal


def test_the_temp_file_sits_beside_the_target(tmp_path, monkeypatch):
    blocked = tmp_path / "system-tmp"
    blocked.mkdir()
    blocked.chmod(0o500)  # the system temp dir is unusable (or another filesystem)
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", spy)
    target = tmp_path / "out" / "notes.md"
    try:
        fsutil.atomic_write_text(target, "kept")
    finally:
        blocked.chmod(0o700)
    assert target.read_text() == "kept"
    ((src, dst),) = renames
    assert Path(src).parent == target.parent and dst == str(target)
    assert Path(src).name.startswith(".notes.md.")  # hidden while it is written
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes.md"]


def test_a_torn_last_journal_line_is_skipped_and_later_writes_still_count(work):
    (work / "a.txt").write_text("one\n")
    journal = UndoJournal()
    apply_edit(plan_edit("a.txt", "two\n", "append"), journal)
    with open(journal.file, "a", encoding="utf-8") as fh:
        fh.write('{"id": "2026-torn", "path": "/x", "exis')  # killed in the middle of a line
    assert [Path(e.path).name for e in journal.entries()] == ["a.txt"]
    # The next write after the crash is read back too, not glued onto the torn line.
    apply_edit(plan_edit("b.txt", "new\n", "new"), journal)
    assert [Path(e.path).name for e in UndoJournal().entries()] == ["a.txt", "b.txt"]
    assert UndoJournal().undo().path.endswith("b.txt") and not (work / "b.txt").exists()
    assert UndoJournal().undo().path.endswith("a.txt")
    assert (work / "a.txt").read_text() == "one\n"
