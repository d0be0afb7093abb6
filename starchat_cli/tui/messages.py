"""Typed messages the worker threads post to the chat view, and what the chat view offers them.

Textual delivers the messages on the UI loop. They are the chat view's own business, so
they do not bubble up to the screen or the app::

    surface.post_message(ReplyChunk(gen_id))  # from any thread

:class:`ChatSurface` is the part of the chat view that the reply stream and the model
loading use (a protocol, so that neither imports the view).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from textual.containers import VerticalScroll
from textual.message import Message
from textual.notifications import SeverityLevel

from starchat_cli.chat.conversation import Conversation, ReplyOutcome
from starchat_cli.engine.contract import Engine


class ChatSurface(Protocol):
    """The conversation, the transcript, the status line, notifications, messages and workers."""

    conversation: Conversation
    state: str  # shown in the status bar: loading, generating, stopped

    @property
    def transcript(self) -> VerticalScroll: ...

    def notify(
        self, message: str, *, severity: SeverityLevel = "information", timeout: float | None = None
    ) -> None: ...

    def post_message(self, message: Message) -> bool: ...

    def run_worker(
        self, work: Callable[[], None], *, name: str, group: str, exit_on_error: bool, thread: bool
    ) -> object: ...

    def update_status(self) -> None: ...


@dataclass
class ReplyStarted(Message, bubble=False):
    """The prompt is fitted: its size, the context size, and how many old turns were left out."""

    gen_id: int
    prompt_tokens: int
    n_ctx: int
    dropped_turns: int


@dataclass
class ReplyChunk(Message, bubble=False):
    """Text is waiting in the reply stream's buffer (at most one of these is in flight)."""

    gen_id: int


@dataclass
class ReplyDone(Message, bubble=False):
    gen_id: int
    outcome: ReplyOutcome


@dataclass
class ModelReady(Message, bubble=False):
    """A model finished loading (or failed to: ``error``)."""

    name: str
    n_ctx: int
    engine: Engine | None = None
    error: str | None = None


__all__ = ["ChatSurface", "ModelReady", "ReplyChunk", "ReplyDone", "ReplyStarted"]
