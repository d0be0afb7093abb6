"""The undo journal read back from a damaged disk: `starchat undo` never breaks on its own files.

A journal line can be cut by a crash, hold bytes that are not UTF-8, or be JSON that is not a
record (edited by hand, another version); a saved copy can be deleted; the journal can even be
a folder. Each case goes through the real CLI (CliRunner) on real files: a damaged line is
skipped, a missing copy refuses that one undo naming the file, an unusable journal is one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starchat_cli.cli import terminal
from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode
from starchat_cli.edits.apply import apply_edit
from starchat_cli.edits.errors import EditError
from starchat_cli.edits.plan import plan_edit
from starchat_cli.edits.undo import UndoJournal
from starchat_cli.services import runtime
from tests.helpers.fake_engine import FakeEngine

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def two_writes(work: Path) -> UndoJournal:
    """b.txt created, then a.txt changed ("one" -> "one two", its saved copy kept): newest last."""
    journal = UndoJournal()
    apply_edit(plan_edit("b.txt", "new\n", "new"), journal)
    (work / "a.txt").write_text("one\n")
    apply_edit(plan_edit("a.txt", "two\n", "append"), journal)
    return journal


def append_raw(journal: UndoJournal, data: bytes) -> None:
    with open(journal.file, "ab") as fh:
        fh.write(data)


def listed_names(stdout: str) -> list[str]:
    return [line.split()[2] for line in stdout.splitlines()]


def assert_both_undo(work: Path) -> None:
    """`undo` twice: a.txt back to "one", then b.txt (which starchat created) removed."""
    res = invoke("undo")
    assert res.exit_code == 0, res.stderr
    assert (work / "a.txt").read_text() == "one\n"
    res = invoke("undo")
    assert res.exit_code == 0, res.stderr
    assert not (work / "b.txt").exists()


def one_error_line(res) -> str:  # type: ignore[no-untyped-def]
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("starchat: error: "), res.stderr
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr
    return lines[0]


# -- lines that are not UTF-8 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        b"\xff\xfe\x00\x80 garbage\n",  # a bit-flipped or foreign line
        b'{"id": "20260101000000-abc\xe9", "path": "/x"}\n',  # Latin-1 inside JSON
        b'{"id": "20260101000000-abcdef", "summary": "caf\xc3',  # killed inside a UTF-8 character
    ],
    ids=["binary", "latin-1", "torn character"],
)
@pytest.mark.parametrize("where", ["last", "between"])
def test_a_journal_line_that_is_not_utf8_is_skipped(work, junk, where):
    if where == "last":
        journal = two_writes(work)
        append_raw(journal, junk)
    else:
        journal = UndoJournal()
        apply_edit(plan_edit("b.txt", "new\n", "new"), journal)
        append_raw(journal, junk)
        (work / "a.txt").write_text("one\n")
        apply_edit(plan_edit("a.txt", "two\n", "append"), journal)
    res = invoke("undo", "--list")
    assert res.exit_code == 0, res.stderr
    assert listed_names(res.stdout) == ["a.txt", "b.txt"]
    assert_both_undo(work)


# -- JSON that is not a record -------------------------------------------------------------


def valid_record(work: Path) -> dict:
    """A third write, c.txt created by starchat: undone by removing it."""
    (work / "c.txt").write_text("c\n")
    return {
        "id": "20260101000000-c0ffee",
        "path": str(work / "c.txt"),
        "existed": False,
        "backup": "",
        "after_sha256": hashlib.sha256(b"c\n").hexdigest(),
        "time": 1767225600.0,
        "summary": "create c.txt (1 line)",
    }


def with_field(name: str, raw: str):  # type: ignore[no-untyped-def]
    """The valid record with one field's JSON text replaced by ``raw`` (which may be NaN, 1e400, ...)."""

    def make(rec: dict) -> str:
        return json.dumps({**rec, name: "@@"}).replace('"@@"', raw)

    return make


def without(name: str):  # type: ignore[no-untyped-def]
    return lambda rec: json.dumps({k: v for k, v in rec.items() if k != name})


NOT_RECORDS = {
    "a number": lambda rec: "42",
    "a list": lambda rec: "[]",
    "an empty object": lambda rec: "{}",
    "null": lambda rec: "null",
    "a string": lambda rec: '"undo me"',
    "undone a number": lambda rec: '{"undone": 5}',
    "undone a list": lambda rec: '{"undone": ["x"]}',
    "summary missing": without("summary"),
    "id missing": without("id"),
    "id a number": with_field("id", "7"),
    "id a path": with_field("id", '"../../etc/x"'),
    "path a number": with_field("path", "5"),
    "path empty": with_field("path", '""'),
    "path relative": with_field("path", '"c.txt"'),
    "existed a string": with_field("existed", '"no"'),
    "existed 0": with_field("existed", "0"),
    "backup a list": with_field("backup", "[]"),
    "after_sha256 not hex": with_field("after_sha256", '"not a digest"'),
    "time NaN": with_field("time", "NaN"),
    "time 1e400": with_field("time", "1e400"),
    "time a huge int": with_field("time", "1" + "0" * 40),
    "time negative": with_field("time", "-5"),
    "time a string": with_field("time", '"yesterday"'),
    "time true": with_field("time", "true"),
    "summary a list": with_field("summary", '["x"]'),
}


@pytest.mark.parametrize("damage", ["valid", *NOT_RECORDS])
def test_journal_lines_that_are_not_records_are_skipped(work, damage):
    journal = two_writes(work)
    rec = valid_record(work)
    line = json.dumps(rec) if damage == "valid" else NOT_RECORDS[damage](rec)
    append_raw(journal, line.encode() + b"\n")
    res = invoke("undo", "--list")
    assert res.exit_code == 0, res.stderr
    if damage == "valid":  # the record itself is good: only the damage makes it skipped
        assert listed_names(res.stdout) == ["c.txt", "a.txt", "b.txt"]
        assert invoke("undo").exit_code == 0 and not (work / "c.txt").exists()
    else:
        assert listed_names(res.stdout) == ["a.txt", "b.txt"]
        assert (work / "c.txt").read_text() == "c\n"
    assert_both_undo(work)


def test_a_record_whose_saved_copy_lies_outside_the_journal_is_skipped(work):
    """A hand-edited backup path would make undo copy that file over another and delete it."""
    journal = two_writes(work)
    precious = work / "precious.txt"
    precious.write_text("keep me\n")
    rec = {**valid_record(work), "existed": True, "backup": str(precious)}
    append_raw(journal, json.dumps(rec).encode() + b"\n")
    res = invoke("undo", "--list")
    assert res.exit_code == 0 and listed_names(res.stdout) == ["a.txt", "b.txt"]
    assert_both_undo(work)
    assert precious.read_text() == "keep me\n" and (work / "c.txt").read_text() == "c\n"


def test_a_record_that_existed_but_has_no_saved_copy_is_skipped(work):
    journal = two_writes(work)
    rec = {**valid_record(work), "existed": True, "backup": ""}
    append_raw(journal, json.dumps(rec).encode() + b"\n")
    assert listed_names(invoke("undo", "--list").stdout) == ["a.txt", "b.txt"]
    assert_both_undo(work)


# -- a saved copy that is gone -------------------------------------------------------------


def test_a_missing_saved_copy_refuses_that_undo_naming_it_and_the_one_before_still_works(work):
    journal = two_writes(work)
    newest = journal.entries()[-1]
    assert newest.path.endswith("a.txt") and Path(newest.backup).is_file()
    Path(newest.backup).unlink()
    res = invoke("undo", "--list")
    assert res.exit_code == 0, res.stderr
    assert listed_names(res.stdout) == ["a.txt", "b.txt"]  # still listed, marked
    assert "saved copy missing" in res.stdout.splitlines()[0]
    res = invoke("undo")
    assert res.exit_code == ExitCode.NOT_APPLIED
    line = one_error_line(res)
    assert "a.txt" in line and Path(newest.backup).name in line and "missing" in line
    assert (work / "a.txt").read_text() == "one\ntwo\n"  # left as it is
    # That write cannot be undone any more; the one before it can.
    res = invoke("undo")
    assert res.exit_code == 0, res.stderr
    assert not (work / "b.txt").exists() and (work / "a.txt").read_text() == "one\ntwo\n"
    assert invoke("undo").exit_code == ExitCode.NOT_APPLIED  # nothing left


# -- a journal that cannot be used ---------------------------------------------------------


def test_a_journal_that_is_a_folder_is_one_line_naming_it(work):
    journal = UndoJournal()
    journal.file.mkdir(parents=True)
    for args in (["undo"], ["undo", "--list"]):
        res = invoke(*args)
        assert res.exit_code == ExitCode.NOT_APPLIED, res.stderr
        line = one_error_line(res)
        assert str(journal.file) in line and "folder" in line and "move it" in line
    # A write is refused before anything changes: the file and the journal folder stay as they are.
    (work / "a.txt").write_text("one\n")
    with pytest.raises(EditError, match="journal"):
        apply_edit(plan_edit("a.txt", "two\n", "append"), journal)
    assert (work / "a.txt").read_text() == "one\n"
    assert sorted(p.name for p in journal.dir.iterdir()) == ["journal.jsonl"]


def test_edit_with_an_unusable_journal_writes_nothing(work, monkeypatch):
    """`starchat edit --yes` when the undo folder is a regular file: exit 11, the file untouched."""
    journal = UndoJournal()
    journal.dir.parent.mkdir(parents=True, exist_ok=True)
    journal.dir.write_text("not a folder")
    engine = FakeEngine("Here is the new file:\n\n```python\nx = 2\n```\n")
    monkeypatch.setattr(runtime, "open_engine", lambda settings, explicit, **kw: runtime.Opened(engine))
    monkeypatch.setattr(terminal, "stdin_is_terminal", lambda: False)
    (work / "app.py").write_text("x = 1\n")
    res = invoke("edit", "app.py", "set x to 2", "--yes")
    assert res.exit_code == ExitCode.NOT_APPLIED, res.stderr
    assert str(journal.dir) in res.stderr.splitlines()[-1]
    assert (work / "app.py").read_text() == "x = 1\n"
    assert invoke("undo").exit_code == ExitCode.NOT_APPLIED  # nothing to undo, no traceback


def test_undo_when_the_file_became_a_folder_is_one_line(work):
    two_writes(work)
    (work / "a.txt").unlink()
    (work / "a.txt").mkdir()
    res = invoke("undo")
    assert res.exit_code == ExitCode.NOT_APPLIED
    assert "a.txt" in one_error_line(res)
    assert (work / "a.txt").is_dir()
