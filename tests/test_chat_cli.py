"""`starchat chat` and `starchat sessions ...` through Typer's CliRunner (no terminal, no model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from starchat_cli.chat.sessions import SessionStore
from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode

from .test_import_hygiene import loaded_after

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_chat_help_lists_its_options():
    res = invoke("chat", "--help")
    assert res.exit_code == 0
    for option in ("--model", "--session", "--new", "--system", "--ctx", "--threads", "--gpu", "--format"):
        assert option in res.stdout, option


def test_chat_needs_a_terminal():
    res = invoke("chat", "-m", "demo")
    assert res.exit_code == ExitCode.INPUT
    assert "needs a terminal" in res.stderr and "Traceback" not in res.output


def test_chat_session_and_new_conflict():
    res = invoke("chat", "--session", "abc", "--new")
    assert res.exit_code == ExitCode.USAGE


def test_sessions_list(saved_sessions):
    a, b = saved_sessions
    res = invoke("sessions", "list")
    assert res.exit_code == 0
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith(b) and lines[1].startswith(a)
    assert "reverse a string in python" in lines[1] and "2 msgs" in lines[1]
    data = json.loads(invoke("sessions", "list", "--json").stdout)
    assert [d["id"] for d in data] == [b, a]


def test_sessions_list_when_empty():
    res = invoke("sessions", "list")
    assert res.exit_code == 0 and "no saved sessions" in res.stderr


def test_sessions_show_and_export(saved_sessions, tmp_path, monkeypatch):
    a, b = saved_sessions
    res = invoke("sessions", "show", b[:6])
    assert res.exit_code == 0
    assert "## Assistant (stopped)\n\nfn quicksort" in res.stdout
    monkeypatch.chdir(tmp_path)
    res = invoke("sessions", "export", a)
    assert res.exit_code == 0
    text = (tmp_path / f"starchat-{a}.md").read_text()
    assert "## System\n\nbe brief" in text and "`s[::-1]`" in text
    res = invoke("sessions", "export", a, "-o", "-")
    assert res.stdout == text


def test_sessions_search(saved_sessions):
    a, b = saved_sessions
    res = invoke("sessions", "search", "quicksort")
    assert res.exit_code == 0 and res.stdout.startswith(b)
    assert "[quicksort]" in res.stdout
    res = invoke("sessions", "search", "nothing-like-this")
    assert res.exit_code == 1 and "no matches" in res.stderr


def test_sessions_rm(saved_sessions):
    a, b = saved_sessions
    res = invoke("sessions", "rm", a, "zzzz")
    assert res.exit_code == 1 and "no session 'zzzz'" in res.stderr
    with SessionStore() as store:
        assert len(store.list()) == 2  # all or nothing
    res = invoke("sessions", "rm", a)  # no terminal to ask on: refused, nothing deleted
    assert res.exit_code == 1 and "add --yes to confirm" in res.stderr
    with SessionStore() as store:
        assert len(store.list()) == 2
    res = invoke("sessions", "rm", a, "--yes")
    assert res.exit_code == 0 and f"deleted {a}" in res.stdout
    with SessionStore() as store:
        assert [s.id for s in store.list()] == [b]


def test_unknown_session_is_one_line():
    res = invoke("sessions", "show", "nope")
    assert res.exit_code == 1
    assert (
        res.stderr.strip()
        == "starchat: error: no session 'nope': `starchat sessions list` shows the saved ones"
    )


@pytest.mark.parametrize("args", [["chat", "--help"], ["sessions", "list"]])
def test_chat_and_sessions_import_nothing_heavy(args):
    probe = (
        "import sys\n"
        f"sys.argv = ['starchat', *{args!r}]\n"
        "from starchat_cli.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = loaded_after(probe)
    assert not loaded & {"llama_cpp", "torch", "textual"}


def test_bare_starchat_without_a_terminal_prints_help():
    from .helpers.cli import run_starchat

    res = run_starchat([])
    out = res.stdout + res.stderr
    assert b"Usage: starchat" in out and b"needs a terminal" not in out
