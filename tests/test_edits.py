"""Safe file insertion: every mode, diffs, encodings, line endings, permissions, refusals, undo."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from starchat_cli.chat.filenames import suggest_filename
from starchat_cli.core.paths import get_paths
from starchat_cli.edits.apply import apply_edit
from starchat_cli.edits.errors import (
    BinaryFileError,
    EditError,
    FileChangedError,
    NothingToUndoError,
    OutsideRootError,
    ReadOnlyFileError,
)
from starchat_cli.edits.plan import parse_range, plan_edit
from starchat_cli.edits.undo import UndoJournal

BASE = "line1\nline2\nline3\n"
CODE = "new_a\nnew_b\n"


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize(
    "mode, kwargs, expected",
    [
        ("append", {}, BASE + CODE),
        ("replace", {}, CODE),
        ("insert", {"line": 1}, CODE + BASE),
        ("insert", {"line": 3}, "line1\nline2\n" + CODE + "line3\n"),
        ("insert", {"line": 4}, BASE + CODE),
        ("after", {"anchor": "line2"}, "line1\nline2\n" + CODE + "line3\n"),
        ("range", {"line_range": (2, 3)}, "line1\n" + CODE),
        ("range", {"line_range": (1, 1)}, CODE + "line2\nline3\n"),
    ],
)
def test_every_insert_mode(work, mode, kwargs, expected):
    f = write(work / "a.txt", BASE)
    plan = plan_edit("a.txt", CODE, mode, **kwargs)
    assert f.read_text() == BASE  # planning writes nothing
    apply_edit(plan, UndoJournal())
    assert f.read_text() == expected


def test_new_file_and_its_diff(work):
    plan = plan_edit("pkg/new.py", "print('hi')", "new")
    diff = plan.diff()
    assert diff.startswith("--- /dev/null\n+++ b/pkg/new.py\n") and "+print('hi')\n" in diff
    assert plan.creates and "create pkg/new.py" in plan.summary()
    apply_edit(plan)
    path = work / "pkg" / "new.py"
    assert path.read_text() == "print('hi')\n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not the temp file's 0600
    with pytest.raises(EditError, match="already exists"):
        plan_edit("pkg/new.py", "x", "new")


def test_diff_of_an_insert(work):
    write(work / "a.txt", BASE)
    diff = plan_edit("a.txt", CODE, "after", anchor="line1").diff()
    assert "--- a/a.txt\n+++ b/a.txt\n" in diff
    assert " line1\n+new_a\n+new_b\n line2\n" in diff


def test_bad_arguments_are_clear(work):
    write(work / "a.txt", BASE)
    with pytest.raises(EditError, match="between 1 and 4"):
        plan_edit("a.txt", CODE, "insert", line=9)
    with pytest.raises(EditError, match="no line matches"):
        plan_edit("a.txt", CODE, "after", anchor="nope")
    with pytest.raises(EditError, match="matches lines 1, 2, 3"):
        plan_edit("a.txt", CODE, "after", anchor="line")
    with pytest.raises(EditError, match="outside"):
        plan_edit("a.txt", CODE, "range", line_range=(2, 7))
    with pytest.raises(EditError, match="does not exist"):
        plan_edit("missing.txt", CODE, "insert", line=1)
    with pytest.raises(EditError, match="directory"):
        (work / "d").mkdir()
        plan_edit("d", CODE, "append")
    assert parse_range("3-5") == (3, 5) and parse_range("7") == (7, 7)
    with pytest.raises(EditError):
        parse_range("x")


def test_crlf_line_endings_are_kept(work):
    f = work / "win.txt"
    f.write_bytes(b"one\r\ntwo\r\n")
    apply_edit(plan_edit("win.txt", "mid\n", "insert", line=2))
    assert f.read_bytes() == b"one\r\nmid\r\ntwo\r\n"


def test_no_final_newline_is_kept(work):
    f = work / "n.txt"
    f.write_bytes(b"a\nb")
    apply_edit(plan_edit("n.txt", "x\n", "insert", line=1))
    assert f.read_bytes() == b"x\na\nb"


@pytest.mark.parametrize(
    "raw, encoding",
    [
        ("héllo\n".encode("utf-8-sig"), "utf-8-sig"),
        ("héllo\n".encode("utf-16"), "utf-16"),
        ("héllo\n".encode("latin-1"), "latin-1"),
    ],
)
def test_encoding_is_kept(work, raw, encoding):
    f = work / "e.txt"
    f.write_bytes(raw)
    apply_edit(plan_edit("e.txt", "ça\n", "append"))
    assert f.read_bytes() == "héllo\nça\n".encode(encoding)


def test_permissions_are_kept(work):
    f = write(work / "run.sh", "#!/bin/sh\necho hi\n")
    f.chmod(0o750)
    apply_edit(plan_edit("run.sh", "echo bye\n", "append"))
    assert stat.S_IMODE(f.stat().st_mode) == 0o750
    assert f.read_text().endswith("echo bye\n")


def test_a_read_only_file_is_refused_unless_forced(work):
    """The rename would replace it whatever its mode: refused as an editor does, even for root."""
    f = write(work / "ro.txt", BASE)
    f.chmod(0o444)
    with pytest.raises(ReadOnlyFileError, match="read-only") as err:
        plan_edit("ro.txt", CODE, "append")
    assert err.value.exit_code == 11
    plan = plan_edit("ro.txt", CODE, "append", force=True)
    with pytest.raises(ReadOnlyFileError):
        apply_edit(plan)
    assert f.read_text() == BASE
    apply_edit(plan, force=True)
    assert f.read_text() == BASE + CODE and stat.S_IMODE(f.stat().st_mode) == 0o444
    g = write(work / "w.txt", BASE)
    plan = plan_edit("w.txt", CODE, "append")
    g.chmod(0o444)  # made read-only after the diff was shown
    with pytest.raises(ReadOnlyFileError):
        apply_edit(plan, UndoJournal())
    assert g.read_text() == BASE and UndoJournal().entries() == []


def test_a_fifo_is_refused_before_it_is_opened(work):
    """Opening a named pipe waits for a writer: the chat's insert would hang (a process, to time out)."""
    os.mkfifo(work / "pipe.txt")
    code = textwrap.dedent(
        """
        from starchat_cli.edits.errors import UnreadableFileError
        from starchat_cli.edits.plan import plan_edit
        try:
            plan_edit("pipe.txt", "x\\n", "append")
        except UnreadableFileError as exc:
            print(exc.message)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=work, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert "pipe.txt is a named pipe (FIFO), not a regular file" in out.stdout


def test_binary_files_are_refused(work):
    (work / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(BinaryFileError, match="binary"):
        plan_edit("img.png", CODE, "append")


@pytest.mark.parametrize("change", ["content", "same_size_content", "delete"])
def test_a_file_changed_after_the_diff_is_refused(work, change):
    f = write(work / "a.txt", BASE)
    plan = plan_edit("a.txt", CODE, "append")
    if change == "content":
        f.write_text(BASE + "more\n")
    elif change == "same_size_content":
        st = f.stat()
        f.write_text(BASE.replace("line1", "LINE1"))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the hash catches it
    else:
        f.unlink()
    with pytest.raises(FileChangedError):
        apply_edit(plan, UndoJournal())
    assert UndoJournal().entries() == []
    if change != "delete":
        assert "new_a" not in f.read_text()


def test_a_file_created_after_the_preview_is_refused(work):
    plan = plan_edit("late.py", CODE, "new")
    write(work / "late.py", "someone else's\n")
    with pytest.raises(FileChangedError, match="created"):
        apply_edit(plan)
    assert (work / "late.py").read_text() == "someone else's\n"


def test_paths_outside_the_working_directory_need_consent(work, tmp_path):
    outside = tmp_path / "elsewhere.txt"
    for path in (str(outside), "../elsewhere.txt"):
        with pytest.raises(OutsideRootError, match="outside the working directory"):
            plan_edit(path, CODE, "new")
    (work / "link").symlink_to(tmp_path)
    with pytest.raises(OutsideRootError):
        plan_edit("link/elsewhere.txt", CODE, "new")  # a symlink does not get around it
    plan = plan_edit(str(outside), CODE, "new", allow_outside=True)
    assert not plan.inside_root
    apply_edit(plan)
    assert outside.read_text() == CODE


def test_undo_restores_the_previous_content(work):
    f = write(work / "a.txt", BASE)
    journal = UndoJournal()
    assert journal.dir == get_paths().data_dir / "undo"
    apply_edit(plan_edit("a.txt", CODE, "append"), journal)
    apply_edit(plan_edit("b.txt", CODE, "new"), journal)
    assert len(journal.entries()) == 2
    assert journal.undo().path.endswith("b.txt")
    assert not (work / "b.txt").exists()  # a created file is removed again
    journal.undo()
    assert f.read_text() == BASE
    with pytest.raises(NothingToUndoError):
        journal.undo()


def test_undo_refuses_when_the_file_changed_since(work):
    f = write(work / "a.txt", BASE)
    journal = UndoJournal()
    apply_edit(plan_edit("a.txt", CODE, "append"), journal)
    f.write_text("edited by hand\n")
    with pytest.raises(FileChangedError, match="not undone"):
        journal.undo()
    assert f.read_text() == "edited by hand\n"


def test_undo_works_in_a_new_process(work):
    f = write(work / "a.txt", BASE)
    f.chmod(0o640)
    apply_edit(plan_edit("a.txt", CODE, "replace"), UndoJournal())
    code = textwrap.dedent(
        """
        from starchat_cli.edits.undo import UndoJournal
        print(UndoJournal().undo().path)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # this tree's code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(f)
    assert f.read_text() == BASE and stat.S_IMODE(f.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Here:\n\n```python\n# file: app.py\nprint(1)\n```\n", "app.py"),
        ("```js\n// filename: src/index.js\nx()\n```", "src/index.js"),
        ("Save this as `utils/helpers.py`:\n```python\nx = 1\n```", None),
        ("**main.go**\n```go\npackage main\n```", "main.go"),
        ("`src/app.py`:\n\n```python\nx = 1\n```", "src/app.py"),
        ("### File: Makefile\n```make\nall:\n```", "Makefile"),
        ('```python title="pkg/mod.py"\nx = 1\n```', "pkg/mod.py"),
        ("Version 1.2.3\n```\nx\n```", None),
        ("```python\n# file: /etc/passwd\n```", None),
        ("```python\n# file: ../up.py\nx\n```", None),
        ("Just code:\n```python\nprint(2)\n```", None),
    ],
)
def test_suggested_file_names(reply, expected):
    from starchat_cli.chat.codeblocks import extract_code_blocks

    block = extract_code_blocks(reply)[0]
    assert suggest_filename(reply, block.start_line, block.code, block.info) == expected
