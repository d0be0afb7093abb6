"""Snapshots (pytest-textual-snapshot) of the chat's main screens, with a fake engine.

Update after an intended change: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import itertools
import time

import pytest

from starchat_cli.chat.sessions import SessionStore
from starchat_cli.tui.app import make_app
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.tui import say

SIZE = (100, 32)
REPLY = (
    "Here is a function:\n\n```python\n# file: reverse.py\ndef reverse(s: str) -> str:\n"
    '    return s[::-1]\n```\n\nCall `reverse("abc")` to get `"cba"`.'
)


@pytest.fixture(autouse=True)
def fixed_world(monkeypatch, tmp_path):
    """Fixed session ids, clock and time zone, and a fixed working directory."""
    counter = itertools.count(1)
    monkeypatch.setattr("starchat_cli.chat.sessions.secrets.token_hex", lambda n: f"{next(counter):08x}")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    monkeypatch.delenv("TZ")
    time.tzset()


def store() -> SessionStore:
    ticks = itertools.count(1_767_225_600, 60)  # 2026-01-01 00:00 UTC, a minute per write
    return SessionStore(clock=lambda: float(next(ticks)))


def app_with(reply: str = REPLY, **kwargs):
    return make_app(FakeEngine(reply, **kwargs), model_name="fake-model", store=store())


async def send(pilot, text: str) -> None:
    pilot.app.chat.input.cursor_blink = (
        False  # a blinking cursor is drawn or not by timing: the one flaky cell
    )
    await say(pilot, text, rounds=50)


def test_welcome_screen(snap_compare):
    assert snap_compare(app_with(), terminal_size=SIZE)


def test_reply_with_a_code_block(snap_compare):
    async def run_before(pilot):
        await send(pilot, "reverse a string in python")

    assert snap_compare(app_with(), terminal_size=SIZE, run_before=run_before)


def test_stopped_reply(snap_compare):
    async def run_before(pilot):
        engine = pilot.app.conversation.engine
        pilot.app.chat.input.text = "count to ten"
        await pilot.press("enter")
        for _ in range(500):
            if engine.held.is_set():
                break
            await pilot.pause()
        await pilot.press("escape")
        engine.release.set()
        await pilot.app.workers.wait_for_complete()
        for _ in range(50):
            await pilot.pause()
            if not pilot.app.chat.generating:
                break

    app = app_with("one two three four five six seven", hold_after=3)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_diff_preview(snap_compare, fixed_world):
    (fixed_world / "reverse.py").write_text("import sys\n\n\ndef main():\n    pass\n")

    async def run_before(pilot):
        await send(pilot, "reverse a string in python")
        await pilot.press("ctrl+s")
        await pilot.pause()
        pilot.app.screen.query_one("#insert-mode").value = "after"
        await pilot.pause()
        where = pilot.app.screen.query_one("#insert-where")
        where.value = "import sys"
        where.focus()
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(app_with(), terminal_size=SIZE, run_before=run_before)


def test_sessions_search(snap_compare):
    async def run_before(pilot):
        await send(pilot, "reverse a string in python")
        await send(pilot, "/new")
        await send(pilot, "now in rust please")
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press(*"revers")
        await pilot.pause()

    assert snap_compare(app_with(), terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare):
    assert snap_compare(app_with(), terminal_size=SIZE, press=["f1"])
