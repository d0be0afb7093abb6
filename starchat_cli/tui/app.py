"""The ``starchat chat`` Textual app: layout, key bindings and the routing of messages.

Build it with :func:`make_app` (never at import)::

    app = make_app(engine, model_name="demo", store=SessionStore())
    app.run()

The chat itself (transcript, input, status bar, the reply worker, model loading) is the
:class:`~.chat_view.ChatView` widget; the conversation rules (session, history, system
prompt, saving) live in :class:`~starchat_cli.chat.conversation.Conversation`; slash
commands and the palette in :mod:`.commands`; the code-block flow in :mod:`.codeflow`.
This module only lays them out and routes keys and screen messages to them. Esc stops a
reply and keeps what arrived, marked as stopped. Every message is saved when it completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from starchat_cli.chat.conversation import Conversation, EngineFactory
from starchat_cli.chat.sessions import SessionStore
from starchat_cli.edits.undo import UndoJournal
from starchat_cli.engine.contract import Engine
from starchat_cli.engine.params import GenerationParams

from .chat_view import ChatView
from .codeflow import CodeFlow
from .commands import HELP, palette_commands
from .screens import HelpScreen, SessionsChanged


class ChatApp(App[None]):
    CSS_PATH = "chat.tcss"
    TITLE = "starchat"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+n", "new_session", "New", id="chat.new"),
        Binding("ctrl+o", "sessions", "Sessions", id="chat.sessions"),
        Binding("ctrl+b", "copy_block", "Copy code", id="chat.copy"),
        Binding("ctrl+s", "save_block", "Save code", id="chat.save"),
        Binding("ctrl+r", "undo", "Undo write", id="chat.undo"),
        Binding("f1", "help", "Help", id="chat.help"),
        Binding("ctrl+q", "quit", "Quit", id="chat.quit", priority=True),
    ]

    def __init__(
        self,
        conversation: Conversation,
        *,
        session_id: str | None = None,
        journal: UndoJournal | None = None,
        root: Path | None = None,
        preload: bool = True,
    ) -> None:
        super().__init__()
        self.conversation = conversation
        root = (root or Path.cwd()).resolve()
        self.codeflow = CodeFlow(self, root=root, journal=journal or UndoJournal())
        self.chat = ChatView(
            conversation, codeflow=self.codeflow, session_id=session_id, preload=preload, id="chat"
        )

    def compose(self) -> ComposeResult:
        yield self.chat
        yield Footer()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self.chat)

    # -- keys ----------------------------------------------------------------------------------
    def action_stop(self) -> None:
        self.chat.stop()

    async def action_new_session(self) -> None:
        await self.chat.new_session(system=self.conversation.configured_system)

    def action_sessions(self) -> None:
        self.chat.show_sessions()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(HELP))

    def action_undo(self) -> None:
        self.codeflow.undo()

    def action_copy_block(self) -> None:
        self.codeflow.copy_picked()

    def action_save_block(self) -> None:
        self.codeflow.insert_picked(mode="new")

    @on(SessionsChanged)
    async def _sessions_changed(self, event: SessionsChanged) -> None:
        await self.chat.sessions_changed(event)  # the sessions screen posts to the app


def make_app(
    engine: Engine,
    *,
    model_name: str,
    store: SessionStore | None = None,
    session_id: str | None = None,
    system: str | None = None,
    params: GenerationParams | None = None,
    engine_factory: EngineFactory | None = None,
    journal: UndoJournal | None = None,
    root: Path | None = None,
    preload: bool = True,
) -> ChatApp:
    """Build the chat app: the CLI, the tests and the benchmark all come through here."""
    conversation = Conversation(
        engine,
        model_name=model_name,
        store=store or SessionStore(),
        system=system,
        params=params,
        engine_factory=engine_factory,
    )
    return ChatApp(conversation, session_id=session_id, journal=journal, root=root, preload=preload)


__all__ = ["ChatApp", "make_app"]
