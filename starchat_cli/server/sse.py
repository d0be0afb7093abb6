"""Replies in OpenAI's shapes: a whole JSON completion, or a stream of server-sent events.

Chat replies are ``chat.completion`` objects (streamed as ``chat.completion.chunk``
deltas, opened by a role chunk); text replies are ``text_completion`` objects. A stream
ends with a finish chunk, an optional usage chunk and ``data: [DONE]``; one the engine fails
mid-way (its worker died) ends with an ``{"error": ...}`` event instead.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.responses import StreamingResponse

from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import EngineInfo, Generation, StopReason

from .bridge import Piece
from .logprobs import TextLogprobs, chat_logprobs
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


def usage(*gens: Generation, n: int = 0) -> dict[str, Any]:
    """OpenAI's usage object over a reply's choices, ``n`` per prompt (0: all of one prompt): each
    prompt counted once, as OpenAI does, the completions summed; ``prompt_tokens_details.cached_tokens`` counts the reused prefix,
    ``completion_tokens_details`` the drafted tokens kept and rejected (OpenAI's names for a
    ``prediction``), plus starchat's ``decode_steps`` (forward passes while decoding)."""
    firsts = [g.stats for g in gens[:: n or len(gens)]]
    prompt_tokens = sum(s.prompt_tokens for s in firsts)
    generated = sum(g.stats.generated_tokens for g in gens)
    accepted = sum(g.stats.accepted_tokens for g in gens)
    drafted = sum(g.stats.drafted_tokens for g in gens)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated,
        "total_tokens": prompt_tokens + generated,
        "prompt_tokens_details": {"cached_tokens": sum(s.cached_tokens for s in firsts)},
        "completion_tokens_details": {
            "accepted_prediction_tokens": accepted,
            "rejected_prediction_tokens": max(0, drafted - accepted),
        },
        "decode_steps": sum(g.stats.decode_steps for g in gens),
    }


@dataclass(frozen=True)
class ReplyHead:
    """What every object of one reply repeats: its id, kind, creation time, model and the
    backend's fingerprint (:func:`fingerprint`)."""

    kind: Kind
    id: str
    created: int
    model: str
    system_fingerprint: str | None = None

    @classmethod
    def new(cls, kind: Kind, model: str, info: EngineInfo | None = None) -> ReplyHead:
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        print_ = fingerprint(info) if info is not None else None
        return cls(kind, f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), model, print_)

    def fields(self, obj: str) -> dict[str, Any]:
        out = {"id": self.id, "object": obj, "created": self.created, "model": self.model}
        return {**out, "system_fingerprint": self.system_fingerprint}


def fingerprint(info: EngineInfo) -> str | None:
    """OpenAI's ``system_fingerprint``: it changes when what computes the replies changes (the
    starchat version, the model file, its context size, flash attention and placement), so a
    client that compares them knows when the same request may answer differently. llama.cpp's
    form, ``b`` then a tag; None until a local model is loaded, and behind a remote engine."""
    if info.remote or not info.loaded:
        return None
    from starchat_cli import __version__

    what = "|".join(
        [__version__, info.location, str(info.n_ctx), str(info.flash_attn), info.placement, info.cpu_kernels]
    )
    return f"b{__version__}-{hashlib.sha256(what.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Shape:
    """How a reply's choices read: logprobs asked for, the echoed prompts (text completions),
    and the choices per prompt (choice ``i`` belongs to prompt ``i // n``)."""

    logprobs: bool = False
    prefixes: tuple[str, ...] = ()
    n: int = 1

    def prefix(self, i: int) -> str:
        """What goes before choice ``i``'s text: its prompt when echoed, else nothing."""
        return self.prefixes[i // self.n] if self.prefixes else ""


def completion_body(head: ReplyHead, results: list[tuple[str, Generation]], shape: Shape) -> dict[str, Any]:
    """A whole (non-streamed) reply: one choice per ``(text, generation)``."""
    choices = []
    for i, (text, gen) in enumerate(results):
        finish = finish_reason(gen)
        if head.kind == "chat":
            logprobs = chat_logprobs(gen.logprobs) if shape.logprobs else None
            message = {"role": "assistant", "content": text}
            choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
        else:
            prefix = shape.prefix(i)
            logprobs = TextLogprobs(len(prefix)).add(gen.logprobs) if shape.logprobs else None
            choices.append({"index": i, "text": prefix + text, "logprobs": logprobs, "finish_reason": finish})
    obj = "chat.completion" if head.kind == "chat" else "text_completion"
    return {**head.fields(obj), "choices": choices, "usage": usage(*(gen for _, gen in results), n=shape.n)}


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
    first: Any,
    items: AsyncIterator[Any],
    include_usage: bool,
    cancel: threading.Event,
    shape: Shape = Shape(),
) -> AsyncIterator[bytes]:
    """The stream's events: ``first`` (already taken from ``items``), then the rest of ``items``:
    ``(choice index, item)`` pairs, the items a text chunk, a :class:`~.bridge.Piece` or the
    choice's finished Generation; each choice opens (a role chunk; the echoed prompt) and ends
    (its finish chunk) in turn."""
    chat = head.kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"
    offsets: dict[int, TextLogprobs] = {}

    def chunk(i: int, text: str | None, finish: str | None, entries: Any = None, role: bool = False) -> bytes:
        logprobs = None
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None and not role:
                delta["content"] = text
            if entries is not None:
                logprobs = chat_logprobs(entries)
            choice = {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        else:
            if entries is not None:
                logprobs = offsets.setdefault(i, TextLogprobs(len(shape.prefix(i)))).add(entries)
            choice = {"index": i, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        return _event({**head.fields(obj), "choices": [choice]})

    gens: list[Generation] = []
    opened = -1
    pending = [first]
    try:
        while True:
            try:
                item = pending.pop() if pending else await items.__anext__()
            except StopAsyncIteration:
                break
            except StarchatError as exc:  # mid-stream (the model's worker died): an error event, as
                # OpenAI and llama-server send one (the openai client raises it), and no [DONE]
                error = {"message": exc.message, "type": "server_error", "code": None, "param": None}
                yield _event({"error": error})
                return
            if item is None:
                break
            i, part = item
            if i > opened:  # a choice begins
                opened = i
                if chat:
                    yield chunk(i, None, None, role=True)
                elif shape.prefix(i):
                    yield chunk(i, shape.prefix(i), None)
            if isinstance(part, str):
                yield chunk(i, part, None)
            elif isinstance(part, Piece):
                yield chunk(i, part.text, None, part.logprobs if shape.logprobs else None)
            else:  # the choice's finished Generation
                gens.append(part)
                yield chunk(i, None, finish_reason(part))
        if include_usage and gens:
            yield _event({**head.fields(obj), "choices": [], "usage": usage(*gens, n=shape.n)})
        yield b"data: [DONE]\n\n"
    finally:
        cancel.set()  # a client that went away stops its generation at the next token
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()  # the choices' own streams stop too


def sse_response(
    head: ReplyHead,
    first: Any,
    items: AsyncIterator[Any],
    include_usage: bool,
    cancel: threading.Event,
    shape: Shape = Shape(),
) -> StreamingResponse:
    return live(sse_events(head, first, items, include_usage, cancel, shape))


def live(
    body: AsyncIterator[str] | AsyncIterator[bytes], media_type: str = "text/event-stream"
) -> StreamingResponse:
    """A streamed answer no cache or proxy holds back (SSE here and on /infill, NDJSON on /api)."""
    return StreamingResponse(
        body, media_type=media_type, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


__all__ = [
    "FINISH",
    "live",
    "ReplyHead",
    "Shape",
    "completion_body",
    "first_item",
    "sse_events",
    "sse_response",
    "usage",
]
