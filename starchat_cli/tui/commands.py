"""The chat's slash commands and command palette entries, as tables.

Each :class:`Command` names its handler, its usage and its line in the help; the help
screen's command table is built from :data:`COMMANDS`. :data:`PALETTE` feeds the app's
``get_system_commands`` (Ctrl+P). Handlers run against a :class:`ChatHost` (what a command
needs of the chat; the chat view is one), never against the app itself::

    await run_command(view, "/model starcoder2-3b")
    entries = list(palette_commands(view))  # SystemCommand objects for Ctrl+P
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Protocol, Sequence

from textual.app import App, SystemCommand

from starchat_cli.chat.conversation import parse_system
from starchat_cli.core.errors import StarchatError

from .codeflow import CodeFlow
from .messages import ChatSurface
from .screens import HelpScreen


class ChatHost(ChatSurface, Protocol):
    """What a command needs of the chat: the surface, the code-block flow, the reply, sessions."""

    codeflow: CodeFlow

    @property
    def app(self) -> App[Any]: ...  # to push a screen, or leave

    @property
    def generating(self) -> bool: ...  # a reply is streaming

    async def new_session(self, system: str | None) -> None: ...

    def switch_model(self, name: str) -> None: ...

    def stop(self) -> None: ...

    def show_sessions(self) -> None: ...


Handler = Callable[[ChatHost, str], "Awaitable[None] | None"]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str  # as the help shows it: "/model [NAME]"
    help: str
    handler: Handler
    aliases: tuple[str, ...] = ()


# -- handlers: (the chat, the text after the command) ----------------------------------------------


async def _new(host: ChatHost, arg: str) -> None:
    await host.new_session(system=host.conversation.configured_system)


async def _clear(host: ChatHost, arg: str) -> None:
    await host.new_session(system=host.conversation.system)


def _model(host: ChatHost, name: str) -> None:
    conv = host.conversation
    if not name:
        host.notify(f"model: {conv.model_name} (switch with /model NAME)")
    elif not conv.can_switch:
        host.notify("switching models is not available here", severity="warning")
    elif host.generating:
        host.notify("wait for the reply to finish (or Esc) before switching models", severity="warning")
    else:
        host.switch_model(name)


def _system(host: ChatHost, arg: str) -> None:
    conv = host.conversation
    if not arg:
        shown = conv.system if conv.system is not None else "(the model's default)"
        host.notify(f"system prompt: {shown}", timeout=8)
        return
    conv.set_system(parse_system(arg))
    host.notify("system prompt set" if conv.system is not None else "system prompt: the model's default")


def _save(host: ChatHost, arg: str) -> None:
    host.codeflow.insert_picked(arg, mode="new")


def _insert(host: ChatHost, arg: str) -> None:
    host.codeflow.insert_picked(arg, mode="insert")


def _copy(host: ChatHost, arg: str) -> None:
    host.codeflow.copy_picked(arg)


def _undo(host: ChatHost, arg: str) -> None:
    host.codeflow.undo()


def _export(host: ChatHost, arg: str) -> None:
    session = host.conversation.session
    if session is None:
        host.notify("nothing to export yet", severity="warning")
        return
    root = host.codeflow.root  # the working directory
    target = Path(arg).expanduser() if arg else root / f"starchat-{session.id}.md"
    if not target.is_absolute():
        target = root / target
    try:
        host.conversation.export(target)
    except (StarchatError, OSError) as exc:
        host.notify(f"cannot export: {exc}", severity="error")
        return
    host.notify(f"exported to {target}")


def _sessions(host: ChatHost, arg: str) -> None:
    host.show_sessions()


def _rename(host: ChatHost, title: str) -> None:
    if host.conversation.session is None or not title:
        host.notify("usage: /rename TITLE (after the first message)", severity="warning")
        return
    host.conversation.rename(title)
    host.update_status()


def _help(host: ChatHost, arg: str) -> None:
    host.app.push_screen(HelpScreen(HELP))


def _quit(host: ChatHost, arg: str) -> None:
    host.app.exit()


def _stop(host: ChatHost, arg: str) -> None:
    host.stop()


_TABLE = (
    Command("/new", "/new", "start a new session (default system prompt)", _new),
    Command(
        "/clear",
        "/clear",
        "clear the screen and the context: a new session with the same model and system prompt",
        _clear,
    ),
    Command("/model", "/model [NAME]", "show or switch the model", _model),
    Command(
        "/system",
        "/system [TEXT]",
        "show or set the system prompt (`/system default` restores the model's own)",
        _system,
    ),
    Command(
        "/save",
        "/save [N]",
        "save code block N of the last reply (default: the last block) as a new file",
        _save,
    ),
    Command("/insert", "/insert [N]", "insert code block N into an existing file", _insert),
    Command("/copy", "/copy [N]", "copy code block N to the clipboard", _copy),
    Command("/undo", "/undo", "undo the last file write (also after a restart)", _undo),
    Command("/export", "/export [PATH]", "export this session to Markdown", _export),
    Command("/sessions", "/sessions", "open the sessions list", _sessions),
    Command("/rename", "/rename TITLE", "rename this session", _rename),
    Command("/help", "/help", "this help", _help),
    Command("/quit", "/quit", "leave", _quit, aliases=("/exit",)),
)

COMMANDS: dict[str, Command] = {}
for _command in _TABLE:
    for _name in (_command.name, *_command.aliases):
        COMMANDS[_name] = _command


async def run_command(host: ChatHost, line: str) -> None:
    """Run a slash command line ("/name arg..."); an unknown name gets a warning."""
    name, _, arg = line.strip().partition(" ")
    name = name.lower()
    command = COMMANDS.get(name)
    if command is None:
        host.notify(f"unknown command {name}: /help lists them", severity="warning")
        return
    result = command.handler(host, arg.strip())
    if inspect.isawaitable(result):
        await result


# -- the help screen ------------------------------------------------------------------------------

_KEYS = """\
# starchat chat

## Keys

| key | does |
|---|---|
| Enter | send the message |
| Ctrl+J (or Shift+Enter where the terminal reports it) | new line in the message |
| Up / Down on the first / last line | earlier messages you sent |
| Esc | stop the reply (the part received is kept, marked *stopped*) |
| Ctrl+N | new session |
| Ctrl+O | sessions: search, resume, rename (Ctrl+R), delete (Del) |
| Ctrl+B | copy the last code block |
| Ctrl+S | save or insert the last code block into a file |
| Ctrl+R | undo the last file write |
| Ctrl+P | command palette |
| F1 | this help |
| Ctrl+Q | quit |
"""

_AFTER = """
Every write shows a diff first and needs a yes. Files outside the working directory
need a second yes. Sessions are saved as you go.
"""


def help_text(commands: Sequence[Command] = _TABLE) -> str:
    """The help screen's Markdown: the keys, then one row per command."""
    rows = "".join(f"| `{c.usage}` | {c.help} |\n" for c in commands)
    return f"{_KEYS}\n## Commands\n\n| command | does |\n|---|---|\n{rows}{_AFTER}"


HELP = help_text()


# -- the command palette --------------------------------------------------------------------------


@dataclass(frozen=True)
class PaletteEntry:
    title: str
    help: str
    run: Handler  # a command's handler, run with no argument


PALETTE = (
    PaletteEntry("New session", "Start a new chat session", _new),
    PaletteEntry("Sessions", "Search, resume, rename or delete saved sessions", _sessions),
    PaletteEntry("Stop reply", "Stop the reply being generated", _stop),
    PaletteEntry("Copy last code block", "Copy it to the clipboard", _copy),
    PaletteEntry("Save last code block", "Save or insert it into a file", _save),
    PaletteEntry("Undo last file write", "Restore the file starchat wrote last", _undo),
    PaletteEntry("Export session", "Export this session to Markdown", _export),
    PaletteEntry("Help", "Keys and commands", _help),
)


def palette_commands(host: ChatHost) -> Iterator[SystemCommand]:
    """The palette entries, run on ``host`` (the app's ``get_system_commands`` adds them to Textual's)."""
    for entry in PALETTE:
        yield SystemCommand(entry.title, entry.help, partial(entry.run, host, ""))


__all__ = [
    "COMMANDS",
    "ChatHost",
    "HELP",
    "PALETTE",
    "Command",
    "PaletteEntry",
    "help_text",
    "palette_commands",
    "run_command",
]
