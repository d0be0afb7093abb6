"""The whole-file edit below the faces: prompt, block choice, guards, fit check, the write and its undo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from starchat_cli.core.errors import ContextOverflowError, ExitCode, InputError, NoCodeError
from starchat_cli.edits.errors import BinaryFileError, FileChangedError, OutsideRootError
from starchat_cli.edits.rewrite import (
    ContextFile,
    ElidedCodeError,
    build_prompt,
    check_rewrite,
    elision_marker,
    new_text_from,
    pick_block,
)
from starchat_cli.edits.undo import UndoJournal
from starchat_cli.engine.params import GenerationParams
from starchat_cli.services import edit as service
from tests.helpers.fake_engine import FakeEngine

OLD = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(6)).rstrip("\n") + "\n"


def block(code: str, lang: str = "python") -> str:
    return f"Here is the file:\n```{lang}\n{code}```\n"


# -- prompt ----------------------------------------------------------------------------------


def test_prompt_has_the_file_fenced_with_language_and_path_context_and_one_instruction():
    prompt = build_prompt(
        "pkg/app.py", "x = '```'\n", "rename x to y", (ContextFile("util.js", "export const a = 1;\n"),)
    )
    assert "`pkg/app.py`:\n````python\nx = '```'\n````" in prompt  # a fence longer than the file's
    assert "`util.js`:\n```javascript\nexport const a = 1;\n```" in prompt
    assert "reference only" in prompt and prompt.index("util.js") < prompt.index("pkg/app.py")
    assert "Task: rename x to y" in prompt
    assert "complete new version of `pkg/app.py` in a single ```python code block" in prompt


# -- the block -------------------------------------------------------------------------------


def test_pick_block_takes_the_largest_in_the_files_language():
    reply = (
        "Run it:\n```bash\npython app.py --with a very long command line that is longer than all\n```\n"
        "The file:\n```py\nA = 1\nB = 2\n```\nand a snippet:\n```python\nA = 1\n```\n"
    )
    assert pick_block(reply, "app.py").code == "A = 1\nB = 2\n"
    assert pick_block("```\nonly\n```", "app.py").code == "only\n"


def test_pick_block_without_a_block_is_no_code():
    with pytest.raises(NoCodeError) as err:
        pick_block("Sure! I renamed it for you.", "app.py")
    assert err.value.exit_code == ExitCode.NO_CODE


def test_new_text_keeps_a_missing_final_newline():
    b = pick_block(block("a\nb\n"), "x.py")
    assert new_text_from(b, "a\nc") == "a\nb"
    assert new_text_from(b, "a\nc\n") == "a\nb\n"


# -- guards ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "marker",
    [
        "    # ... rest unchanged",
        "// ... existing code ...",
        "    ...",
        "/* ... */",
        "# rest of the file unchanged",
        "<!-- ... -->",
        "-- ... remaining queries as before",
        "# Your code here",
    ],
)
def test_elision_markers_are_refused(marker):
    assert elision_marker(marker)
    new = OLD.replace("    return x + 3\n", marker + "\n")
    with pytest.raises(ElidedCodeError) as err:
        check_rewrite(OLD, new, "rename x to y")
    assert err.value.exit_code == ExitCode.NOT_APPLIED
    assert marker.strip() in err.value.message


@pytest.mark.parametrize("line", ["x = 1  # ...", 'print("...")', "# loading the file...", "# TODO: errors"])
def test_ordinary_lines_are_not_markers(line):
    assert not elision_marker(line)


def test_an_ellipsis_already_in_the_file_is_code():
    old = "class P(Protocol):\n    def f(self) -> int:\n        ...\n"
    check_rewrite(old, old.replace("f(", "g("), "rename f to g")  # no error


def test_a_large_unexplained_deletion_is_refused_unless_asked():
    short = "".join(OLD.splitlines(keepends=True)[:8])
    with pytest.raises(ElidedCodeError, match="drops"):
        check_rewrite(OLD, short, "add type hints")
    check_rewrite(OLD, short, "delete f2 to f5")  # asked for: fine
    check_rewrite(OLD, short, "remove the unused functions")


def test_a_cut_off_reply_is_refused():
    with pytest.raises(ElidedCodeError, match="cut off"):
        check_rewrite(OLD, OLD, "x", cut_off=True)


# -- reading ---------------------------------------------------------------------------------


def test_read_source_refuses_binary_missing_directories_and_outside(work: Path, tmp_path: Path):
    (work / "blob.bin").write_bytes(b"\x7fELF\x00\x01")
    with pytest.raises(BinaryFileError) as err:
        service.read_source("blob.bin")
    assert err.value.exit_code == ExitCode.INPUT
    with pytest.raises(InputError, match="does not exist"):
        service.read_source("nope.py")
    with pytest.raises(InputError, match="directory"):
        service.read_source(".")
    outside = tmp_path / "elsewhere.py"
    outside.write_text("x = 1\n")
    assert service.outside_root(outside)
    with pytest.raises(OutsideRootError) as err2:
        service.read_source(outside)
    assert err2.value.exit_code == ExitCode.NOT_APPLIED
    assert service.read_source(outside, allow_outside=True).display == str(outside.resolve())


def test_read_context_files(work: Path):
    (work / "u.py").write_text("U = 1\n")
    (work / "b.bin").write_bytes(b"\x00\x00")
    assert service.read_context(["u.py"]) == (ContextFile("u.py", "U = 1\n"),)
    with pytest.raises(InputError, match="no such file"):
        service.read_context(["missing.py"])
    with pytest.raises(InputError, match="binary"):
        service.read_context(["b.bin"])


# -- the service with an engine --------------------------------------------------------------


class Recording(FakeEngine):
    def generate(self, turns, params=None, **kw):  # type: ignore[override]
        self.params = params
        return super().generate(turns, params, **kw)


def test_rewrite_passes_the_file_as_prediction_and_stops_after_the_block(work: Path):
    (work / "app.py").write_text(OLD)
    new = OLD.replace("f1", "g1")
    engine = Recording(block(new) + "\nAnd some chatter after the block that is never read " * 5)
    src = service.read_source("app.py")
    result = service.rewrite(engine, src, "rename f1 to g1", GenerationParams(draft="auto"))
    assert engine.params.prediction == OLD and engine.params.draft == "auto"
    assert engine.params.max_tokens is not None  # bounded: a model repeating itself ends
    assert result.problem is None and result.changed
    assert result.plan.new_text == new
    assert "chatter" not in result.reply  # generation stopped once the file's block closed
    assert "-def f1(x):\n+def g1(x):\n" in result.diff()
    assert (work / "app.py").read_text() == OLD  # rewrite() writes nothing


def test_fit_check_happens_before_generating(work: Path):
    (work / "big.py").write_text("value = 12345678901234567890\n" * 60)
    engine = FakeEngine(block("x\n"), n_ctx=512)
    with pytest.raises(ContextOverflowError) as err:
        service.rewrite(engine, service.read_source("big.py"), "rename value", GenerationParams())
    assert err.value.exit_code == ExitCode.CONTEXT
    needed = int(err.value.message.split("--ctx ")[1].split(",")[0])
    assert needed > 512 and needed % 1024 == 0
    assert engine.calls == []  # nothing generated


def test_apply_writes_into_the_journal_and_undo_restores(work: Path):
    (work / "app.py").write_text(OLD)
    src = service.read_source("app.py")
    result = service.rewrite(FakeEngine(block(OLD.replace("f2", "h2"))), src, "rename f2", GenerationParams())
    journal = UndoJournal()
    entry = service.apply(result, journal)
    assert entry is not None and "h2" in (work / "app.py").read_text()
    assert journal.entries()[-1].path == str(work / "app.py")
    journal.undo()
    assert (work / "app.py").read_text() == OLD


def test_apply_refuses_a_file_changed_after_it_was_read(work: Path):
    target = work / "app.py"
    target.write_text(OLD)

    def reply(_turns):
        target.write_text(OLD + "# typed by the user meanwhile\n")
        return block(OLD.replace("f2", "h2"))

    result = service.rewrite(FakeEngine(reply), service.read_source("app.py"), "rename", GenerationParams())
    with pytest.raises(FileChangedError) as err:
        service.apply(result)
    assert err.value.exit_code == ExitCode.NOT_APPLIED
    assert target.read_text().endswith("meanwhile\n")


def test_no_block_and_elided_come_back_as_problems(work: Path):
    (work / "app.py").write_text(OLD)
    src = service.read_source("app.py")
    r1 = service.rewrite(FakeEngine("I would rename it."), src, "rename", GenerationParams())
    assert isinstance(r1.problem, NoCodeError) and r1.plan is None
    elided = OLD.replace("def f4(x):\n    return x + 4\n", "# ... rest unchanged\n")
    r2 = service.rewrite(FakeEngine(block(elided)), src, "rename", GenerationParams())
    assert isinstance(r2.problem, ElidedCodeError) and r2.diff()
    with pytest.raises(ElidedCodeError):
        service.apply(r2)
    assert (work / "app.py").read_text() == OLD


def test_a_latin1_file_keeps_its_encoding_and_crlf(work: Path):
    data = "# café\r\nname = 'crème'\r\n".encode("latin-1")
    (work / "l.py").write_bytes(data)
    os.chmod(work / "l.py", 0o751)
    src = service.read_source("l.py")
    new = "# café\nname = 'brûlée'\n"
    result = service.rewrite(FakeEngine(block(new)), src, "change the name", GenerationParams())
    service.apply(result)
    assert (work / "l.py").read_bytes() == "# café\r\nname = 'brûlée'\r\n".encode("latin-1")
    assert (work / "l.py").stat().st_mode & 0o777 == 0o751


def test_a_rewrite_the_files_encoding_cannot_hold_is_not_applied(work: Path):
    (work / "l.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    src = service.read_source("l.py")
    assert src.file.encoding == "latin-1"
    result = service.rewrite(FakeEngine(block("s = 'café ☕'\n")), src, "add a cup", GenerationParams())
    assert result.problem is not None and result.problem.exit_code == ExitCode.NOT_APPLIED
    assert "encoding" in result.problem.message
    with pytest.raises(type(result.problem)):
        service.apply(result)
    assert (work / "l.py").read_bytes() == "s = 'caf\xe9'\n".encode("latin-1")


def test_without_a_known_context_the_fit_check_is_skipped_and_tokens_are_bounded(work: Path):
    (work / "app.py").write_text(OLD)

    class Remote(Recording):
        @property
        def info(self):  # a server that does not say its context size
            from dataclasses import replace

            return replace(super().info, n_ctx=0, remote=True)

    engine = Remote(block(OLD.replace("f1", "g1")), n_ctx=64)
    result = service.rewrite(engine, service.read_source("app.py"), "rename f1", GenerationParams())
    assert result.problem is None and result.changed
    assert engine.params.max_tokens == service.runaway_limit(service.count_text(engine, OLD))


def test_a_reply_that_quotes_the_file_first_then_rewrites_it(work: Path):
    (work / "app.py").write_text(OLD)
    new = OLD.replace("f5", "g5")
    reply = f"Your file:\n```python\n{OLD}```\nThe new version:\n```python\n{new}```\nUsage:\n```python\nf0(1)\n```\n"
    result = service.rewrite(
        FakeEngine(reply), service.read_source("app.py"), "rename f5", GenerationParams()
    )
    assert result.problem is None and result.plan.new_text == new
    assert "Usage" not in result.reply  # stopped once the rewrite's block closed
