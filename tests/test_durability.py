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


def test_a_keyed_cache_file_reads_damage_as_empty_and_skips_failed_writes(tmp_path):
    from starchat_cli.core.keyed import KeyedFile

    table = KeyedFile(tmp_path / "sub" / "table.json")
    assert table._read() == {} and table._entry("a") is None  # no file yet
    assert table._put("a", {"x": 1}) and table._put("b", {"y": 2})
    assert table._entry("a") == {"x": 1} and table._entry("b") == {"y": 2}
    assert [p.name for p in table.path.parent.iterdir()] == ["table.json"]  # no temp file left
    table.path.write_text('{"a": {"x": 1}, "b": ', encoding="utf-8")  # torn by a crash elsewhere
    assert table._read() == {}
    table.path.write_text('["not", "an", "object"]', encoding="utf-8")
    assert table._entry("a") is None
    table.path.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert table._entry("a") is None  # an entry that is not an object is no entry
    assert table._put("c", {"z": 3}) and table._read() == {"a": [1, 2], "c": {"z": 3}}
    blocked = KeyedFile(table.path / "under-a-file.json")  # its folder is a file: unwritable, even as root
    assert blocked._put("d", {}) is False and blocked._entry("d") is None
    assert table._clear() == 2 and not table.path.exists() and table._clear() == 0
