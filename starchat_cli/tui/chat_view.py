"""The chat itself: the transcript, the input and the status bar, the reply worker, model loading.

The app (:mod:`.app`) lays it out and routes its keys here; everything a chat does happens
in this widget, against the UI-free :class:`~starchat_cli.chat.conversation.Conversation`::

    view = ChatView(conversation, codeflow=CodeFlow(app, root=root, journal=journal))
    await view.new_session(system=None)

Worker threads report with the messages of :mod:`.messages`, posted to this widget. The
reply stream (:mod:`.stream`) and the model loading (:mod:`.loading`) see it as a
:class:`~.messages.ChatSurface`, the slash commands (:mod:`.commands`) as a
:class:`~.commands.ChatHost`: small protocols, so that none of them imports this module or
the app. Enter sends a message, or runs a ``/command``.
"""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from starchat_cli.chat.conversation import Conversation
from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.prompting.formats import Message as Turn

from .codeflow import CodeFlow
from .commands import run_command
from .loading import ModelLoading
from .messages import ModelReady, ReplyChunk, ReplyDone, ReplyStarted
from .screens import SessionsChanged, SessionsScreen
from .stream import ReplyInFlight, ReplyStream
from .widgets import AssistantMessage, ChatInput, CodeActions, Note, StatusBar, UserMessage


class ChatView(Vertical):
    """One conversation on screen; ``state`` is the status bar's note (loading, generating, stopped)."""

    def __init__(
        self,
        conversation: Conversation,
        *,
        codeflow: CodeFlow,
        session_id: str | None = None,
        preload: bool = True,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.conversation = conversation
        self.codeflow = codeflow
        self.preload = preload
        self.state = ""
        self._resume_id = session_id
        self.replies = ReplyStream(self)
        self.models = ModelLoading(self)

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")
        yield ChatInput(id="input")
        yield StatusBar(id="status")

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    @property
    def input(self) -> ChatInput:
        return self.query_one("#input", ChatInput)

    @property
    def generating(self) -> bool:
        """A reply is in flight (until it is saved and drawn in full)."""
        return self.replies.current is not None

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
                f"Chatting with {self.conversation.model_name}. Enter sends, Ctrl+J adds a line, "
                "Esc stops a reply, F1 or /help lists keys and commands.",
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

    # -- sending -----------------------------------------------------------------------------
    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if text.startswith("/"):
            event.input.remember(text)
            event.input.clear()
            await run_command(self, text)
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
        widget = AssistantMessage(model=self.conversation.model_name)
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

    def stop(self) -> None:
        """Stop the reply in flight (what arrived is kept, marked stopped)."""
        if self.replies.stop():
            self.state = "stopping…"
            self.update_status()

    # -- model loading ---------------------------------------------------------------------------
    def switch_model(self, name: str) -> None:
        self.models.switch(name)

    @on(ModelReady)
    def _model_ready(self, event: ModelReady) -> None:
        self.models.ready(event)

    # -- sessions --------------------------------------------------------------------------------
    async def new_session(self, system: str | None) -> None:
        self.replies.stop()
        self.conversation.new(system)
        await self.transcript.remove_children()
        await self._show_welcome()
        self.update_status()
        self.input.focus()

    def show_sessions(self) -> None:
        """The sessions screen; the session chosen there is opened here."""
        current = self.conversation.session

        def chosen(session_id: str | None) -> None:
            session = self.conversation.session
            if session_id and (session is None or session_id != session.id):
                self.call_later(self.open_session, session_id)

        screen = SessionsScreen(self.conversation.store, current.id if current else None)
        self.app.push_screen(screen, chosen)

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
                await w.show_extras()
        self.transcript.scroll_end(animate=False)
        self.update_status()

    async def sessions_changed(self, event: SessionsChanged) -> None:
        """The sessions screen renamed or deleted a session: follow it if it is this one."""
        session = self.conversation.session
        if session is not None and event.session_id == session.id:
            if event.deleted:
                await self.new_session(self.conversation.system)
            else:
                self.conversation.refresh_session()
                self.update_status()

    @on(CodeActions.Action)
    def _code_action(self, event: CodeActions.Action) -> None:
        self.codeflow.on_action(event.action, event.block, event.reply)


__all__ = ["ChatView"]
