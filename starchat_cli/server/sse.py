"""Replies in OpenAI's shapes: a whole JSON completion, or a stream of server-sent events.

Chat replies are ``chat.completion`` objects (streamed as ``chat.completion.chunk``
deltas, opened by a role chunk); text replies are ``text_completion`` objects. A stream
ends with a finish chunk, an optional usage chunk and ``data: [DONE]``; one the engine fails
mid-way (its worker died) ends with an ``{"error": ...}`` event instead.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.responses import StreamingResponse

from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import Generation, StopReason

from .requests import Kind

# The engine's stop reasons as OpenAI finish reasons.
FINISH = {
    StopReason.STOP: "stop",
    StopReason.LENGTH: "length",
    StopReason.CONTEXT: "length",
    StopReason.CANCELLED: "stop",
}


def finish_reason(gen: Generation | None) -> str:
    return FINISH.get(gen.stats.stop_reason, "stop") if gen is not None else "stop"


def usage(gen: Generation) -> dict[str, Any]:
    """OpenAI's usage object; ``prompt_tokens_details.cached_tokens`` counts the reused prefix,
    ``completion_tokens_details`` the drafted tokens kept and rejected (OpenAI's names for a
    ``prediction``), plus starchat's ``decode_steps`` (forward passes while decoding)."""
    st = gen.stats
    return {
        "prompt_tokens": st.prompt_tokens,
        "completion_tokens": st.generated_tokens,
        "total_tokens": st.prompt_tokens + st.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": st.cached_tokens},
        "completion_tokens_details": {
            "accepted_prediction_tokens": st.accepted_tokens,
            "rejected_prediction_tokens": max(0, st.drafted_tokens - st.accepted_tokens),
        },
        "decode_steps": st.decode_steps,
    }


@dataclass(frozen=True)
class ReplyHead:
    """What every object of one reply repeats: its id, kind, creation time and model."""

    kind: Kind
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, kind: Kind, model: str) -> ReplyHead:
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return cls(kind, f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), model)

    def fields(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def completion_body(head: ReplyHead, text: str, gen: Generation) -> dict[str, Any]:
    """A whole (non-streamed) reply."""
    finish = finish_reason(gen)
    if head.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {**head.fields(obj), "choices": [choice], "usage": usage(gen)}


async def first_item(items: AsyncIterator[Any]) -> Any:
    """The first chunk of a stream (None: it ended), taken before the response starts: an engine
    error raised here becomes an HTTP error, not a broken stream (``items`` stops its generation)."""
    try:
        return await items.__anext__()
    except StopAsyncIteration:
        return None


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


async def sse_events(
    head: ReplyHead,
    first: str | Generation | None,
    items: AsyncIterator[str | Generation],
    include_usage: bool,
    cancel: threading.Event,
) -> AsyncIterator[bytes]:
    """The stream's events: ``first`` (already taken from ``items``), then the rest of ``items``."""
    chat = head.kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            delta: dict[str, Any] = (
                {"role": "assistant", "content": ""}
                if role
                else ({"content": text} if text is not None else {})
            )
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return _event({**head.fields(obj), "choices": [choice]})

    gen = None
    pending = [first]
    try:
        if chat:
            yield chunk(None, None, role=True)
        try:
            while True:
                item = pending.pop() if pending else await items.__anext__()
                if item is None:
                    break
                if isinstance(item, str):
                    yield chunk(item, None)
                else:  # the finished Generation
                    gen = item
        except StopAsyncIteration:
            pass
        except StarchatError as exc:  # mid-stream (the model's worker died): an error event, as
            # OpenAI and llama-server send one (the openai client raises it), and no [DONE]
            error = {"message": exc.message, "type": "server_error", "code": None, "param": None}
            yield _event({"error": error})
            return
        yield chunk(None, finish_reason(gen))
        if include_usage and gen is not None:
            yield _event({**head.fields(obj), "choices": [], "usage": usage(gen)})
        yield b"data: [DONE]\n\n"
    finally:
        cancel.set()  # a client that went away stops its generation at the next token


def sse_response(
    head: ReplyHead,
    first: str | Generation | None,
    items: AsyncIterator[str | Generation],
    include_usage: bool,
    cancel: threading.Event,
) -> StreamingResponse:
    return StreamingResponse(
        sse_events(head, first, items, include_usage, cancel),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["FINISH", "ReplyHead", "completion_body", "first_item", "sse_events", "sse_response", "usage"]
