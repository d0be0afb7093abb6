"""The reply in flight: from the worker thread to the transcript.

The worker produces text faster than the UI can draw it. Each piece goes into a
:class:`ChunkBuffer`; only the first piece after the UI last emptied the buffer posts a
:class:`~starchat_cli.tui.messages.ReplyChunk`, so at most one is in flight and the UI
takes everything that arrived meanwhile in one go. :class:`ReplyStream` starts a reply's
worker and draws what its messages bring, on a :class:`~.messages.ChatSurface` (the chat
view, which routes the messages to it)::

    replies = ReplyStream(view)
    reply = replies.start(session_id, widget, sent_at)  # then, in a thread worker:
    replies.run(reply, turns, system)  # posts ReplyStarted, ReplyChunk(s), ReplyDone to the view
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from starchat_cli.engine.contract import StopReason
from starchat_cli.engine.prompting.formats import Message as Turn

from .messages import ChatSurface, ReplyChunk, ReplyDone, ReplyStarted
from .widgets import AssistantMessage, Note


class ChunkBuffer:
    """Thread-safe: the worker pushes, the UI takes."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._posted = False

    def push(self, text: str) -> bool:
        """Queue text; True when the caller should post a ReplyChunk (none is in flight)."""
        with self._lock:
            self._parts.append(text)
            if self._posted:
                return False
            self._posted = True
            return True

    def take(self) -> str:
        """Everything queued so far; the next push asks for a new ReplyChunk."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            self._posted = False
        return text


@dataclass
class ReplyInFlight:
    """The reply being generated: where it is drawn, which session it belongs to, its stop switch."""

    gen_id: int
    session_id: str
    widget: AssistantMessage
    cancel: threading.Event = field(default_factory=threading.Event)
    sent_at: float = field(default_factory=time.perf_counter)
    shown: bool = False  # its first text is on screen


class ReplyStream:
    """At most one reply at a time; messages of an earlier (stopped, left) reply are ignored."""

    def __init__(self, surface: ChatSurface) -> None:
        self.surface = surface
        self.current: ReplyInFlight | None = None
        self.buffer = ChunkBuffer()
        self.first_text_seconds: list[float] = []  # per reply: Enter to its first text on screen
        self._gen_id = 0

    def start(self, session_id: str, widget: AssistantMessage, sent_at: float) -> ReplyInFlight:
        """A new reply drawn into ``widget``; its worker starts after the next refresh."""
        self._gen_id += 1
        self.current = ReplyInFlight(self._gen_id, session_id, widget, sent_at=sent_at)
        self.buffer.take()
        widget.start_stream()
        return self.current

    def stop(self) -> bool:
        """Ask the reply in flight to stop (what arrived is kept); False if there is none."""
        if self.current is None:
            return False
        self.current.cancel.set()
        return True

    def run(self, reply: ReplyInFlight, turns: list[Turn], system: str | None) -> None:
        """The worker's body: generate, posting ReplyStarted, ReplyChunk(s), then ReplyDone."""
        gen_id, surface = reply.gen_id, self.surface

        def started(prompt_tokens: int, n_ctx: int, dropped_turns: int) -> None:
            surface.post_message(ReplyStarted(gen_id, prompt_tokens, n_ctx, dropped_turns))

        def chunk(text: str) -> None:
            if self.buffer.push(text):
                surface.post_message(ReplyChunk(gen_id))

        outcome = surface.conversation.run_reply(
            turns, system, reply.cancel, on_started=started, on_chunk=chunk
        )
        surface.post_message(ReplyDone(gen_id, outcome))
        surface.conversation.persist()  # the prompt cache, written once the reply is on its way to the screen

    def _of(self, gen_id: int) -> ReplyInFlight | None:
        current = self.current
        return current if current is not None and current.gen_id == gen_id else None

    async def started(self, event: ReplyStarted) -> None:
        current = self._of(event.gen_id)
        if current is None:
            return
        conv = self.surface.conversation
        conv.n_ctx = event.n_ctx or conv.n_ctx
        if event.dropped_turns:
            n = event.dropped_turns
            note = Note(
                f"⚠ The conversation outgrew the {event.n_ctx:,}-token context: the {n} oldest "
                f"turn{'s' if n != 1 else ''} {'were' if n != 1 else 'was'} left out of this reply's prompt "
                "(the system prompt and your latest message are kept).",
                kind="warning",
            )
            await self.surface.transcript.mount(note, before=current.widget)
            self.surface.notify(f"{n} oldest turn(s) dropped to fit the context", severity="warning")

    async def chunk(self, event: ReplyChunk) -> None:
        current = self._of(event.gen_id)
        if current is None:
            return
        text = self.buffer.take()
        if text and current.widget.is_attached:  # not when the user switched sessions mid-reply
            await current.widget.append(text)
            if not current.shown:
                current.shown = True
                self.first_text_seconds.append(time.perf_counter() - current.sent_at)

    async def done(self, event: ReplyDone) -> None:
        current = self._of(event.gen_id)
        if current is None:
            return
        try:
            await self._finish(current, event)
        finally:
            self.current = None  # only now: the reply is saved and drawn in full
            self.surface.update_status()

    async def _finish(self, current: ReplyInFlight, event: ReplyDone) -> None:
        surface, outcome = self.surface, event.outcome
        rest = self.buffer.take()
        widget = current.widget
        if rest and widget.is_attached:
            await widget.append(rest)
        surface.conversation.finish_reply(current.session_id, outcome)
        if widget.is_attached:
            await widget.finish(outcome.stopped)
            if outcome.error:
                await surface.transcript.mount(Note(f"✗ {outcome.error}", kind="error"))
        if outcome.error:
            surface.notify(outcome.error, severity="error", timeout=8)
        for warning in surface.conversation.new_warnings():  # a worker crash healed mid-reply
            surface.notify(warning, severity="warning", timeout=15)
        stop_reason = outcome.stats.stop_reason if outcome.stats is not None else None
        if stop_reason is StopReason.CONTEXT:
            await surface.transcript.mount(
                Note(
                    "⚠ The reply was cut off: the context window is full (start /new or raise --ctx).",
                    "warning",
                )
            )
        elif stop_reason is StopReason.LENGTH:
            await surface.transcript.mount(Note("The reply stopped at the --max-tokens limit.", "info"))
        surface.state = "stopped" if outcome.stopped and not outcome.error else ""


__all__ = ["ChunkBuffer", "ReplyInFlight", "ReplyStream"]
