"""Typed messages the worker threads post to the chat view (Textual delivers them on the UI loop).

They are the chat view's own business, so they do not bubble up to the screen or the app::

    view.post_message(ReplyChunk(gen_id))  # from any thread
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from starchat_cli.chat.conversation import ReplyOutcome
from starchat_cli.engine.contract import Engine


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


__all__ = ["ModelReady", "ReplyChunk", "ReplyDone", "ReplyStarted"]
