"""Typed messages the worker threads post to the chat app (Textual delivers them on the UI loop)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from starchat_cli.chat.conversation import ReplyOutcome
from starchat_cli.engine.contract import Engine


@dataclass
class ReplyStarted(Message):
    """The prompt is fitted: its size, the context size, and how many old turns were left out."""

    gen_id: int
    prompt_tokens: int
    n_ctx: int
    dropped_turns: int


@dataclass
class ReplyChunk(Message):
    """Text is waiting in the app's stream buffer (at most one of these is in flight)."""

    gen_id: int


@dataclass
class ReplyDone(Message):
    gen_id: int
    outcome: ReplyOutcome


@dataclass
class ModelReady(Message):
    """A model finished loading (or failed to: ``error``)."""

    name: str
    n_ctx: int
    engine: Engine | None = None
    error: str | None = None


__all__ = ["ModelReady", "ReplyChunk", "ReplyDone", "ReplyStarted"]
