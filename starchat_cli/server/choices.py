"""Several prompts in one ``/v1/completions`` request: one choice each, generated one after another.

    results = await whole_choices(bridge, starts)              # [(text, Generation), ...]
    JSONResponse(choices_body(head, results))                  # choices[i].index == i, usage summed
    sse_choices(head, bridge, starts, first, include_usage)    # streamed: chunks carry their index

The engine holds one model and generates one reply at a time, so the prompts run in order;
each choice ends with its own finish chunk when streamed, then one usage chunk (when asked)
sums them all, then ``data: [DONE]``, as OpenAI streams a list of prompts.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Sequence

from starlette.responses import StreamingResponse

from starchat_cli.engine.contract import Generation

from .bridge import Bridge, Start
from .sse import ReplyHead, completion_body, finish_reason, usage


async def whole_choices(bridge: Bridge, starts: Sequence[Start]) -> list[tuple[str, Generation]]:
    """Each generation whole, in order."""
    return [await bridge.run_blocking(start) for start in starts]


def summed_usage(gens: Sequence[Generation]) -> dict[str, Any]:
    """The usage objects of ``gens`` added up, field by field (nested ones too)."""

    def add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {k: add(v, b[k]) if isinstance(v, dict) else v + b[k] for k, v in a.items()}

    total = usage(gens[0])
    for gen in gens[1:]:
        total = add(total, usage(gen))
    return total


def choices_body(head: ReplyHead, results: Sequence[tuple[str, Generation]]) -> dict[str, Any]:
    """A whole reply with one choice per prompt, ``index`` its prompt's place."""
    body = completion_body(head, *results[0])
    body["choices"] = [
        {**completion_body(head, text, gen)["choices"][0], "index": i}
        for i, (text, gen) in enumerate(results)
    ]
    body["usage"] = summed_usage([gen for _, gen in results])
    return body


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


async def _events(
    head: ReplyHead,
    bridge: Bridge,
    starts: Sequence[Start],
    first: tuple[Any, AsyncIterator[str | Generation], Any],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(i: int, text: str, finish: str | None) -> bytes:
        choice = {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
        return _event({**head.fields("text_completion"), "choices": [choice]})

    gens: list[Generation] = []
    for i, start in enumerate(starts):
        if i == 0:
            item, items, cancel = first
            pending = [item]
        else:
            items, cancel = bridge.stream_chunks(start)
            pending = []
        gen = None
        try:
            while True:
                try:
                    item = pending.pop() if pending else await items.__anext__()
                except StopAsyncIteration:
                    break
                if item is None:
                    break
                if isinstance(item, str):
                    yield chunk(i, item, None)
                else:
                    gen = item
        finally:
            cancel.set()  # a client that went away stops the generation at its next token
        yield chunk(i, "", finish_reason(gen))
        if gen is not None:
            gens.append(gen)
    if include_usage and gens:
        yield _event({**head.fields("text_completion"), "choices": [], "usage": summed_usage(gens)})
    yield b"data: [DONE]\n\n"


def sse_choices(
    head: ReplyHead,
    bridge: Bridge,
    starts: Sequence[Start],
    first: tuple[Any, AsyncIterator[str | Generation], Any],
    include_usage: bool,
) -> StreamingResponse:
    """The streamed reply; ``first``: (first item, items, cancel) of ``starts[0]``, taken before
    the response began so that an engine error there is an HTTP error."""
    return StreamingResponse(
        _events(head, bridge, starts, first, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["choices_body", "sse_choices", "summed_usage", "whole_choices"]
