"""`starchat edit` and `starchat undo` end to end: CliRunner with the fake engine, the real demo model, git apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starchat_cli.cli import terminal
from starchat_cli.cli.app import app
from starchat_cli.cli.terminal import show_diff
from starchat_cli.core.errors import ExitCode
from starchat_cli.services import runtime
from tests.helpers.cli import REPO
from tests.helpers.fake_engine import FakeEngine

runner = CliRunner()

OLD = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(6)).rstrip("\n") + "\n"
NEW = OLD.replace("f3", "plus3")


def block(code: str, lang: str = "python") -> str:
    return f"Here is the new file:\n\n```{lang}\n{code}```\n"


class Recording(FakeEngine):
    def generate(self, turns, params=None, **kw):  # type: ignore[override]
        self.params = params
        return super().generate(turns, params, **kw)


@pytest.fixture
def work(work: Path) -> Path:
    (work / "app.py").write_text(OLD)
    return work


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch):
    """Make `starchat edit` use this engine (the same code path as a local or remote one)."""

    def install(engine: FakeEngine, tty: bool = False) -> FakeEngine:
        monkeypatch.setattr(runtime, "open_engine", lambda settings, explicit, **kw: runtime.Opened(engine))
        monkeypatch.setattr(terminal, "stdin_is_terminal", lambda: tty)
        return engine

    return install


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_help_lists_edit_and_undo_and_their_options():
    res = invoke("edit", "--help")
    assert res.exit_code == 0
    for option in (
        "--file",
        "--yes",
        "--force",
        "--diff",
        "--json",
        "--model",
        "--temperature",
        "--ctx",
        "--endpoint",
        "--draft",
    ):
        assert option in res.stdout, option
    assert "--list" in invoke("undo", "--help").stdout


def test_yes_writes_with_greedy_defaults_and_the_file_as_prediction(work, use):
    engine = use(Recording(block(NEW)))
    res = invoke("edit", "app.py", "rename", "f3", "to", "plus3", "--yes")
    assert res.exit_code == 0, res.stderr
    assert (work / "app.py").read_text() == NEW
    assert "-def f3(x):" in res.stdout and "+def plus3(x):" in res.stdout  # the diff is shown
    assert "wrote app.py" in res.stderr
    assert engine.params.temperature == 0.0 and engine.params.draft == "auto"
    assert engine.params.prediction == OLD
    prompt = engine.calls[0][0][-1].content
    assert "rename f3 to plus3" in prompt and "```python\n" + OLD in prompt


def test_temperature_and_draft_flags_are_passed_on(work, use):
    engine = use(Recording(block(NEW)))
    assert invoke("edit", "app.py", "x", "--diff", "-t", "0.7", "--draft", "off").exit_code == 0
    assert engine.params.temperature == 0.7 and engine.params.draft == "off"


def test_declined_at_the_prompt_writes_nothing(work, use):
    use(FakeEngine(block(NEW)), tty=True)
    res = invoke("edit", "app.py", "rename f3", input="n\n")
    assert res.exit_code == ExitCode.NOT_APPLIED
    assert "Apply?" in res.stdout and "+def plus3(x):" in res.stdout
    assert (work / "app.py").read_text() == OLD
    res = invoke("edit", "app.py", "rename f3", input="y\n")
    assert res.exit_code == 0 and (work / "app.py").read_text() == NEW


def test_no_terminal_and_no_yes_writes_nothing_and_says_what_to_do(work, use):
    use(FakeEngine(block(NEW)))
    res = invoke("edit", "app.py", "rename f3")
    assert res.exit_code == ExitCode.NOT_APPLIED
    assert "--yes" in res.stderr and "--diff" in res.stderr
    assert (work / "app.py").read_text() == OLD


def test_identical_rewrite_is_no_changes(work, use):
    use(FakeEngine(block(OLD)))
    res = invoke("edit", "app.py", "tidy it", "--yes")
    assert res.exit_code == 0 and "no changes" in res.stderr
    assert invoke("undo").exit_code == ExitCode.NOT_APPLIED  # nothing was journaled


def test_diff_output_applies_with_git(work, use):
    sub = work / "pkg"
    sub.mkdir()
    (sub / "mod.py").write_text(OLD)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=work, check=True)
    subprocess.run([*git, "add", "."], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=work, check=True)
    use(FakeEngine(block(NEW)))
    res = invoke("edit", "pkg/mod.py", "rename f3", "--diff")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("--- a/pkg/mod.py\n+++ b/pkg/mod.py\n")
    assert "rewriting" in res.stderr and "rewriting" not in res.stdout  # progress never on stdout
    assert (sub / "mod.py").read_text() == OLD  # --diff writes nothing
    subprocess.run(["git", "apply"], cwd=work, input=res.stdout.encode(), check=True)
    assert (sub / "mod.py").read_text() == NEW


def test_json_shape(work, use):
    use(FakeEngine(block(NEW)))
    res = invoke("edit", "app.py", "rename f3", "--json")
    assert res.exit_code == 0
    obj = json.loads(res.stdout)  # one object, nothing else on stdout
    assert set(obj) >= {"files", "diff", "applied", "stats"}
    assert obj["applied"] is False and (work / "app.py").read_text() == OLD  # no --yes: a preview
    assert obj["files"][0]["path"] == "app.py" and obj["files"][0]["changed"] is True
    assert "+def plus3(x):" in obj["diff"]
    for key in ("drafted_tokens", "accepted_tokens", "decode_steps", "generated_tokens"):
        assert key in obj["stats"]
    obj = json.loads(invoke("edit", "app.py", "rename f3", "--json", "--yes").stdout)
    assert obj["applied"] is True and (work / "app.py").read_text() == NEW


# -- guards ----------------------------------------------------------------------------------


def test_no_code_block_is_exit_8_and_writes_nothing(work, use):
    use(FakeEngine("I renamed it for you, it is much better now."))
    res = invoke("edit", "app.py", "rename f3", "--yes")
    assert res.exit_code == ExitCode.NO_CODE
    assert "I renamed it" in res.stderr and "no fenced code block" in res.stderr
    assert (work / "app.py").read_text() == OLD


@pytest.mark.parametrize("marker", ["    # ... rest unchanged", "// ... existing code ...", "    ..."])
def test_elided_code_is_refused_with_the_diff_shown(work, use, marker):
    use(FakeEngine(block(OLD.replace("    return x + 4\n", marker + "\n"))))
    res = invoke("edit", "app.py", "rename f3", "--yes")
    assert res.exit_code == ExitCode.NOT_APPLIED
    assert "leaves code out" in res.stderr
    assert "+" + marker in res.stdout  # the diff is still shown
    assert (work / "app.py").read_text() == OLD


def test_large_deletion_is_refused_but_allowed_when_asked(work, use):
    short = "".join(OLD.splitlines(keepends=True)[:6])
    use(FakeEngine(block(short)))
    res = invoke("edit", "app.py", "add type hints", "--yes")
    assert res.exit_code == ExitCode.NOT_APPLIED and "drops" in res.stderr
    assert (work / "app.py").read_text() == OLD
    res = invoke("edit", "app.py", "delete f2 to f5", "--yes")
    assert res.exit_code == 0 and (work / "app.py").read_text() == short


def test_a_file_that_does_not_fit_names_the_ctx_needed(work, use):
    (work / "big.py").write_text("value = 'a fairly long line of python code here'\n" * 80)
    engine = use(FakeEngine(block("x\n"), n_ctx=1024))
    res = invoke("edit", "big.py", "rename value", "--yes")
    assert res.exit_code == ExitCode.CONTEXT
    assert "--ctx 3072" in res.stderr or "--ctx 4096" in res.stderr
    assert engine.calls == []


def test_binary_file_is_refused(work, use):
    (work / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    engine = use(FakeEngine(block("x\n")))
    res = invoke("edit", "img.png", "make it blue", "--yes")
    assert res.exit_code == ExitCode.INPUT and "binary" in res.stderr
    assert engine.calls == []


def test_a_file_changed_during_generation_is_not_overwritten(work, use):
    target = work / "app.py"

    def reply(_turns):
        target.write_text(OLD + "# the user typed this meanwhile\n")
        return block(NEW)

    use(FakeEngine(reply))
    res = invoke("edit", "app.py", "rename f3", "--yes")
    assert res.exit_code == ExitCode.NOT_APPLIED and "changed" in res.stderr
    assert target.read_text().endswith("meanwhile\n")


def test_outside_the_working_tree_needs_a_yes(work, use, tmp_path):
    outside = tmp_path / "other.py"
    outside.write_text(OLD)
    engine = use(FakeEngine(block(NEW)))
    res = invoke("edit", str(outside), "rename f3")
    assert res.exit_code == ExitCode.NOT_APPLIED and "outside the working directory" in res.stderr
    assert engine.calls == []
    use(engine, tty=True)
    res = invoke("edit", str(outside), "rename f3", input="n\n")
    assert res.exit_code == ExitCode.NOT_APPLIED and outside.read_text() == OLD
    res = invoke("edit", str(outside), "rename f3", "--yes")
    assert res.exit_code == 0 and outside.read_text() == NEW


def test_context_files_are_in_the_prompt_and_unreadable_ones_are_bad_input(work, use):
    (work / "util.py").write_text("def helper():\n    return 42\n")
    engine = use(Recording(block(NEW)))
    assert invoke("edit", "app.py", "use helper", "-f", "util.py", "--diff").exit_code == 0
    assert "`util.py`:\n```python\ndef helper():" in engine.calls[0][0][-1].content
    assert invoke("edit", "app.py", "x", "-f", "missing.py", "--diff").exit_code == ExitCode.INPUT


def test_ctrl_c_during_generation_writes_nothing(work, use):
    class Interrupted(FakeEngine):
        def _run(self, chunks, stats, limit):  # type: ignore[override]
            yield "```python\n"
            raise KeyboardInterrupt

    use(Interrupted(block(NEW)))
    res = invoke("edit", "app.py", "rename f3", "--yes")
    assert res.exit_code == ExitCode.INTERRUPTED
    assert (work / "app.py").read_text() == OLD


# -- undo ------------------------------------------------------------------------------------


def test_undo_restores_crlf_latin1_and_mode_byte_for_byte(work, use):
    original = "# café\r\ndef f(x):\r\n    return x\r\n".encode("latin-1")
    target = work / "l.py"
    target.write_bytes(original)
    os.chmod(target, 0o741)
    use(FakeEngine(block("# café\ndef g(x):\n    return x\n")))
    res = invoke("edit", "l.py", "rename f to g", "--yes")
    assert res.exit_code == 0, res.stderr
    assert target.read_bytes() == "# café\r\ndef g(x):\r\n    return x\r\n".encode("latin-1")
    assert target.stat().st_mode & 0o777 == 0o741
    listed = invoke("undo", "--list")
    assert listed.exit_code == 0 and "l.py" in listed.stdout
    res = invoke("undo")
    assert res.exit_code == 0 and "l.py" in res.stderr
    assert target.read_bytes() == original
    assert target.stat().st_mode & 0o777 == 0o741


def test_undo_is_refused_after_a_manual_edit_unless_forced(work, use):
    use(FakeEngine(block(NEW)))
    assert invoke("edit", "app.py", "rename f3", "--yes").exit_code == 0
    (work / "app.py").write_text(NEW + "# mine\n")
    res = invoke("undo")
    assert res.exit_code == ExitCode.NOT_APPLIED and "--force" in res.stderr
    assert (work / "app.py").read_text().endswith("# mine\n")
    assert invoke("undo", "--force").exit_code == 0
    assert (work / "app.py").read_text() == OLD


def test_undo_with_an_empty_journal(work):
    res = invoke("undo")
    assert res.exit_code == ExitCode.NOT_APPLIED and "nothing to undo" in res.stderr
    res = invoke("undo", "--list")
    assert res.exit_code == 0 and "nothing to undo" in res.stderr


def test_the_tui_journal_and_the_cli_are_the_same(work, use):
    from starchat_cli.edits.undo import UndoJournal

    use(FakeEngine(block(NEW)))
    assert invoke("edit", "app.py", "rename f3", "--yes").exit_code == 0
    entry = UndoJournal().undo()  # what the TUI's /undo calls
    assert entry.path == str(work / "app.py") and (work / "app.py").read_text() == OLD


# -- the real demo model (greedy) ------------------------------------------------------------


def test_demo_model_end_to_end(work, demo_gguf, monkeypatch):
    """The real model through the real engine: a diff or "no changes"; declined leaves the file alone."""
    target = work / "greet.py"
    original = b'def greet(name):\n    return "Hello, " + name\n'
    target.write_bytes(original)
    args = [
        "edit",
        "greet.py",
        "rename the function greet to welcome",
        "-m",
        "demo",
        "-n",
        "48",
        "--threads",
        "2",
    ]
    monkeypatch.setattr(terminal, "stdin_is_terminal", lambda: True)
    res = invoke(*args, input="n\n")
    assert "rewriting greet.py" in res.stderr
    if res.exit_code == 0:
        assert "no changes" in res.stderr
    elif res.exit_code == ExitCode.NOT_APPLIED:
        assert "--- a/greet.py\n+++ b/greet.py\n" in res.stdout  # the diff, then declined or refused
    else:
        assert res.exit_code == ExitCode.NO_CODE, res.stderr
    assert target.read_bytes() == original
    # A real process, stdin not a terminal: stdout holds the one JSON object and nothing else.
    proc = subprocess.run(
        [sys.executable, "-m", "starchat_cli", *args, "--json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    obj = json.loads(proc.stdout)
    assert obj["stats"]["generated_tokens"] > 0 and obj["model"] == "demo"
    assert obj["applied"] is False and b"rewriting greet.py" in proc.stderr
    assert target.read_bytes() == original
    res = invoke(*args, "--yes")
    if res.exit_code == 0 and "wrote greet.py" in res.stderr:
        assert target.read_bytes() != original
        assert invoke("undo").exit_code == 0
    assert target.read_bytes() == original


def test_diff_of_a_refused_rewrite_goes_to_stderr_not_into_the_patch(work, use):
    use(FakeEngine(block(OLD.replace("    return x + 4\n", "    # ... rest unchanged\n"))))
    res = invoke("edit", "app.py", "rename f3", "--diff")
    assert res.exit_code == ExitCode.NOT_APPLIED
    assert res.stdout == ""  # nothing for `| git apply` to apply
    assert "+    # ... rest unchanged" in res.stderr
    obj = json.loads(invoke("edit", "app.py", "rename f3", "--json", "--yes").stdout)
    assert obj["applied"] is False and "leaves code out" in obj["error"]
    assert (work / "app.py").read_text() == OLD


def test_bad_flag_combinations_and_an_empty_instruction(work, use):
    use(FakeEngine(block(NEW)))
    assert invoke("edit", "app.py", "x", "--diff", "--json").exit_code == ExitCode.USAGE
    assert invoke("edit", "app.py", "x", "--diff", "--yes").exit_code == ExitCode.USAGE
    res = invoke("edit", "app.py", " ")
    assert res.exit_code == ExitCode.INPUT and "no instruction" in res.stderr


def test_end_of_input_at_the_prompt_is_a_no(work, use):
    use(FakeEngine(block(NEW)), tty=True)
    res = invoke("edit", "app.py", "rename f3", input="")
    assert res.exit_code == ExitCode.NOT_APPLIED and "left as it was" in res.stderr
    assert (work / "app.py").read_text() == OLD


def test_an_unreachable_endpoint_is_exit_10_and_writes_nothing(work):
    from tests.helpers.servers import free_port

    res = invoke("edit", "app.py", "rename f3", "--yes", "--endpoint", f"http://127.0.0.1:{free_port()}")
    assert res.exit_code == ExitCode.REMOTE, res.stderr
    assert (work / "app.py").read_text() == OLD


def test_edit_through_a_real_endpoint(work, demo_gguf):
    """`--endpoint` to a real `starchat serve`: the RemoteEngine path, no context size known here."""
    from tests.helpers.servers import start_server, stop_server

    target = work / "greet.py"
    original = 'def greet(name):\n    return "Hello, " + name\n'
    target.write_text(original)
    proc, base = start_server("--threads", "2")
    try:
        res = invoke("edit", "greet.py", "rename greet to welcome", "--endpoint", base, "-n", "48", "--json")
    finally:
        stop_server(proc)
    assert res.exit_code in (0, ExitCode.NO_CODE, ExitCode.NOT_APPLIED), res.stderr
    obj = json.loads(res.stdout)
    assert obj["applied"] is False and obj["stats"]["generated_tokens"] > 0
    assert obj["files"][0]["path"] == "greet.py"
    assert target.read_text() == original


def test_the_diff_is_coloured_on_a_terminal_only(monkeypatch):
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    diff = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n"
    tty, pipe = Tty(), io.StringIO()
    show_diff(diff, tty)
    show_diff(diff, pipe)
    assert pipe.getvalue() == diff
    assert "\x1b[31m-old\x1b[0m\n" in tty.getvalue() and "\x1b[32m+new\x1b[0m\n" in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Tty()
    show_diff(diff, plain)
    assert plain.getvalue() == diff
