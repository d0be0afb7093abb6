"""The ``starchat chat`` Textual app: layout, key bindings and the routing of messages.

Build it with :func:`make_app` (never at import). The conversation rules (session,
history, system prompt, saving) live in :class:`~starchat_cli.chat.conversation.Conversation`;
the reply streaming in :mod:`.stream` (text coalesced, one pending message at a time,
appended through Textual's ``MarkdownStream`` so the cost per token stays flat); model
loading in :mod:`.loading`; slash commands and the palette in :mod:`.commands`; the
code-block flow in :mod:`.codeflow`. Esc stops a reply and keeps what arrived, marked
as stopped. Every message is saved when it completes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from starchat_cli.chat.codeblocks import CodeBlock
from starchat_cli.chat.conversation import Conversation, EngineFactory, normalize_turns
from starchat_cli.chat.sessions import Session, SessionStore
from starchat_cli.core.errors import StarchatError
from starchat_cli.edits.undo import UndoJournal
from starchat_cli.engine.contract import Engine
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import Message as Turn

from . import commands
from .clipboard import system_copy
from .codeflow import CodeFlow, suggest
from .commands import HELP
from .loading import ModelLoading
from .messages import ModelReady, ReplyChunk, ReplyDone, ReplyStarted
from .screens import HelpScreen, SessionsChanged, SessionsScreen
from .stream import ReplyInFlight, ReplyStream
from .widgets import AssistantMessage, ChatInput, CodeActions, Note, StatusBar, UserMessage


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
        self.root = (root or Path.cwd()).resolve()
        self.codeflow = CodeFlow(
            self, root=self.root, journal=journal or UndoJournal(), copy=lambda block: self.copy_block(block)
        )
        self.preload = preload
        self.state = ""
        self._resume_id = session_id
        self.replies = ReplyStream(self)
        self.models = ModelLoading(self)

    # -- the conversation, as the tests and the benchmark read it ------------------------------
    @property
    def engine(self) -> Engine:
        return self.conversation.engine

    @property
    def model_name(self) -> str:
        return self.conversation.model_name

    @property
    def store(self) -> SessionStore:
        return self.conversation.store

    @property
    def session(self) -> Session | None:
        return self.conversation.session

    @property
    def system(self) -> str | None:
        return self.conversation.system

    @property
    def history(self) -> list[Turn]:
        return self.conversation.history

    @property
    def generating(self) -> bool:
        return self.replies.current is not None

    @property
    def first_text_seconds(self) -> list[float]:
        """Per reply: seconds from Enter to its first text on screen (the benchmark reads them)."""
        return self.replies.first_text_seconds

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")
        yield ChatInput(id="input")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    @property
    def input(self) -> ChatInput:
        return self.query_one("#input", ChatInput)

    async def on_mount(self) -> None:
        self.transcript.anchor()
        conv = self.conversation
        if self._resume_id:
            await self.open_session(self._resume_id, keep_system=conv.configured_system is not None)
        else:
            await self._show_welcome()
        self.input.focus()
        if self.preload and not conv.engine.info.loaded:
            self.models.preload()
        self.update_status()

    async def _show_welcome(self) -> None:
        await self.transcript.mount(
            Static(
                f"Chatting with {self.model_name}. Enter sends, Ctrl+J adds a line, Esc stops a reply, "
                "F1 or /help lists keys and commands.",
                id="welcome",
                markup=False,
            )
        )

    def update_status(self) -> None:
        conv = self.conversation
        title = ""
        if conv.session is not None:
            title = f"{conv.session.title or 'new session'} ({conv.session.id})"
        self.query_one(StatusBar).show(
            model=conv.model_name,
            used=conv.context_used,
            n_ctx=conv.n_ctx,
            tps=conv.last_tps,
            cached=conv.last_cached,
            session=title,
            state=self.state,
        )

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from commands.palette_commands(self)

    async def run_command(self, line: str) -> None:
        await commands.run_command(self, line)

    # -- sending -----------------------------------------------------------------------------
    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if text.startswith("/"):
            event.input.remember(text)
            event.input.clear()
            await self.run_command(text)
            return
        if self.generating:
            self.notify("A reply is still streaming: wait, or press Esc to stop it", severity="warning")
            return
        event.input.remember(event.value)
        event.input.clear()
        await self.send(event.value.rstrip())

    async def send(self, text: str) -> None:
        sent_at = time.perf_counter()
        session = self.conversation.add_user(text)
        for welcome in self.query("#welcome"):
            await welcome.remove()
        widget = AssistantMessage(model=self.model_name)
        await self.transcript.mount_all([UserMessage(text), widget])
        reply = self.replies.start(session.id, widget, sent_at)
        self.state = "generating…"
        self.update_status()
        # Start the model once the new messages are laid out and drawn: the worker's Python
        # (prompt fitting, sampling) would otherwise wait for the GIL behind that layout work.
        self.call_after_refresh(self._generate, reply, self.conversation.turns(), self.conversation.system)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, reply: ReplyInFlight, turns: list[Turn], system: str | None) -> None:
        self.replies.run(reply, turns, system)

    @on(ReplyStarted)
    async def _reply_started(self, event: ReplyStarted) -> None:
        await self.replies.started(event)

    @on(ReplyChunk)
    async def _reply_chunk(self, event: ReplyChunk) -> None:
        await self.replies.chunk(event)

    @on(ReplyDone)
    async def _reply_done(self, event: ReplyDone) -> None:
        await self.replies.done(event)

    # -- model loading ---------------------------------------------------------------------------
    def switch_model(self, name: str) -> None:
        self.models.switch(name)

    @on(ModelReady)
    def _model_ready(self, event: ModelReady) -> None:
        self.models.ready(event)

    # -- sessions --------------------------------------------------------------------------------
    def action_stop(self) -> None:
        if self.replies.stop():
            self.state = "stopping…"
            self.update_status()

    async def action_new_session(self) -> None:
        await self.new_session(system=self.conversation.configured_system)

    async def new_session(self, system: str | None) -> None:
        self.replies.stop()
        self.conversation.new(system)
        await self.transcript.remove_children()
        await self._show_welcome()
        self.update_status()
        self.input.focus()

    def action_sessions(self) -> None:
        def chosen(session_id: str | None) -> None:
            if session_id and (self.session is None or session_id != self.session.id):
                self.call_later(self.open_session, session_id)

        self.push_screen(SessionsScreen(self.store, self.session.id if self.session else None), chosen)

    async def open_session(self, session_id: str, keep_system: bool = False) -> None:
        """Show a saved session and continue it."""
        try:
            messages = self.conversation.resume(session_id, keep_system=keep_system)
        except StarchatError as exc:
            self.notify(exc.message, severity="error")
            return
        self.replies.stop()  # the partial reply is saved to the session it belongs to
        session = self.conversation.session
        assert session is not None
        await self.transcript.remove_children()
        widgets = [
            UserMessage(m.content)
            if m.role == "user"
            else AssistantMessage(m.content, model=session.model, stopped=m.stopped)
            for m in messages
        ]
        await self.transcript.mount(
            Note(f"Resumed “{session.title or session.id}” ({len(messages)} messages).")
        )
        if widgets:
            await self.transcript.mount_all(widgets)
        for w in widgets:
            if isinstance(w, AssistantMessage):
                await w.show_extras(suggest)
        self.transcript.scroll_end(animate=False)
        self.update_status()

    @on(SessionsChanged)
    async def _sessions_changed(self, event: SessionsChanged) -> None:
        if self.session is not None and event.session_id == self.session.id:
            if event.deleted:
                await self.new_session(self.system)
            else:
                self.conversation.refresh_session()
                self.update_status()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(HELP))

    # -- code blocks --------------------------------------------------------------------------------
    def action_undo(self) -> None:
        self.codeflow.undo()

    def action_copy_block(self) -> None:
        self.codeflow.copy_picked()

    def action_save_block(self) -> None:
        self.codeflow.insert_picked(mode="new")

    def copy_block(self, block: CodeBlock) -> None:
        if system_copy(block.code):
            self.notify("code copied to the clipboard")
        else:
            self.copy_to_clipboard(block.code)  # OSC 52: the terminal puts it on the clipboard
            self.notify("code copied (through the terminal, OSC 52)")

    @on(CodeActions.Action)
    def _code_action(self, event: CodeActions.Action) -> None:
        self.codeflow.on_action(event.action, event.block, event.reply)


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


__all__ = ["HELP", "ChatApp", "make_app", "normalize_turns"]
