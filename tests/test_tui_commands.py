"""The slash-command table: every command is in the help, aliases work, unknown ones warn."""

from __future__ import annotations

import pytest

from starchat_cli.chat.sessions import SessionStore
from starchat_cli.tui.app import make_app
from starchat_cli.tui.commands import COMMANDS, HELP, PALETTE
from tests.helpers.fake_engine import FakeEngine

pytestmark = pytest.mark.anyio


def test_every_command_has_its_row_in_the_help():
    rows = [line for line in HELP.splitlines() if line.startswith("| `/")]
    documented = {cmd.usage: cmd for cmd in COMMANDS.values()}
    assert rows == [f"| `{usage}` | {cmd.help} |" for usage, cmd in documented.items()]
    assert COMMANDS["/exit"] is COMMANDS["/quit"]
    assert "/exit" not in HELP  # an alias, not a row of its own


def test_palette_titles_are_unique():
    titles = [entry.title for entry in PALETTE]
    assert len(titles) == len(set(titles)) and "Export session" in titles


@pytest.mark.parametrize("line", ["/exit", "/QUIT"])
async def test_quit_and_its_alias_leave(line):
    app = make_app(FakeEngine(), model_name="fake", store=SessionStore())
    async with app.run_test(size=(100, 32)) as pilot:
        assert app.return_code is None
        app.chat.input.text = line
        await pilot.press("enter")
        await pilot.pause()
        assert app.return_code == 0  # set by App.exit()


async def test_an_unknown_command_does_not_leave():
    app = make_app(FakeEngine(), model_name="fake", store=SessionStore())
    async with app.run_test(size=(100, 32)) as pilot:
        app.chat.input.text = "/exits"
        await pilot.press("enter")
        await pilot.pause()
        assert app.return_code is None
