"""The chat's slash commands and command palette entries, as tables.

Each :class:`Command` names its handler, its usage and its line in the help; the help
screen's command table is built from :data:`COMMANDS`. :data:`PALETTE` feeds the app's
``get_system_commands`` (Ctrl+P).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, Sequence

from textual.app import SystemCommand

from starchat_cli.chat.conversation import parse_system
from starchat_cli.core.errors import StarchatError

if TYPE_CHECKING:
    from .app import ChatApp

Handler = Callable[["ChatApp", str], "Awaitable[None] | None"]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str  # as the help shows it: "/model [NAME]"
    help: str
    handler: Handler
    aliases: tuple[str, ...] = ()


# -- handlers: (app, the text after the command) --------------------------------------------------


async def _new(app: ChatApp, arg: str) -> None:
    await app.new_session(system=app.conversation.configured_system)


async def _clear(app: ChatApp, arg: str) -> None:
    await app.new_session(system=app.conversation.system)


def _model(app: ChatApp, name: str) -> None:
    conv = app.conversation
    if not name:
        app.notify(f"model: {conv.model_name} (switch with /model NAME)")
    elif not conv.can_switch:
        app.notify("switching models is not available here", severity="warning")
    elif app.generating:
        app.notify("wait for the reply to finish (or Esc) before switching models", severity="warning")
    else:
        app.switch_model(name)


def _system(app: ChatApp, arg: str) -> None:
    conv = app.conversation
    if not arg:
        shown = conv.system if conv.system is not None else "(the model's default)"
        app.notify(f"system prompt: {shown}", timeout=8)
        return
    conv.set_system(parse_system(arg))
    app.notify("system prompt set" if conv.system is not None else "system prompt: the model's default")


def _save(app: ChatApp, arg: str) -> None:
    app.codeflow.insert_picked(arg, mode="new")


def _insert(app: ChatApp, arg: str) -> None:
    app.codeflow.insert_picked(arg, mode="insert")


def _copy(app: ChatApp, arg: str) -> None:
    app.codeflow.copy_picked(arg)


def _undo(app: ChatApp, arg: str) -> None:
    app.action_undo()


def _export(app: ChatApp, arg: str) -> None:
    session = app.conversation.session
    if session is None:
        app.notify("nothing to export yet", severity="warning")
        return
    target = Path(arg).expanduser() if arg else app.root / f"starchat-{session.id}.md"
    if not target.is_absolute():
        target = app.root / target
    try:
        app.conversation.export(target)
    except (StarchatError, OSError) as exc:
        app.notify(f"cannot export: {exc}", severity="error")
        return
    app.notify(f"exported to {target}")


def _sessions(app: ChatApp, arg: str) -> None:
    app.action_sessions()


def _rename(app: ChatApp, title: str) -> None:
    if app.conversation.session is None or not title:
        app.notify("usage: /rename TITLE (after the first message)", severity="warning")
        return
    app.conversation.rename(title)
    app.update_status()


def _help(app: ChatApp, arg: str) -> None:
    app.action_help()


def _quit(app: ChatApp, arg: str) -> None:
    app.exit()


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


async def run_command(app: ChatApp, line: str) -> None:
    """Run a slash command line ("/name arg..."); an unknown name gets a warning."""
    name, _, arg = line.strip().partition(" ")
    name = name.lower()
    command = COMMANDS.get(name)
    if command is None:
        app.notify(f"unknown command {name}: /help lists them", severity="warning")
        return
    result = command.handler(app, arg.strip())
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
    run: Callable[[ChatApp], Any]


PALETTE = (
    PaletteEntry("New session", "Start a new chat session", lambda app: app.action_new_session()),
    PaletteEntry(
        "Sessions", "Search, resume, rename or delete saved sessions", lambda app: app.action_sessions()
    ),
    PaletteEntry("Stop reply", "Stop the reply being generated", lambda app: app.action_stop()),
    PaletteEntry("Copy last code block", "Copy it to the clipboard", lambda app: app.action_copy_block()),
    PaletteEntry(
        "Save last code block", "Save or insert it into a file", lambda app: app.action_save_block()
    ),
    PaletteEntry(
        "Undo last file write", "Restore the file starchat wrote last", lambda app: app.action_undo()
    ),
    PaletteEntry("Export session", "Export this session to Markdown", lambda app: app.run_command("/export")),
    PaletteEntry("Help", "Keys and commands", lambda app: app.action_help()),
)


def palette_commands(app: ChatApp) -> Iterator[SystemCommand]:
    """The palette entries for ``app`` (its ``get_system_commands`` yields them after Textual's)."""
    for entry in PALETTE:
        yield SystemCommand(entry.title, entry.help, partial(entry.run, app))


__all__ = [
    "COMMANDS",
    "HELP",
    "PALETTE",
    "Command",
    "PaletteEntry",
    "help_text",
    "palette_commands",
    "run_command",
]
