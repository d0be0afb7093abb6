"""What an OpenAI-compatible server sent back, checked: events of the right shape, or an error.

A 200 that is not an answer (an HTML page from a proxy or a web UI, an event stream whose
data lines are not JSON, JSON of another shape) is a :class:`RemoteError` naming what came
back (content type and first bytes), never an empty answer. A plain JSON completion where a
stream was asked for is a valid answer: it becomes one event.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

HEAD_BYTES = 80


def first_bytes(data: bytes | str) -> str:
    """The start of a body, quoted on one line."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return repr(text[:HEAD_BYTES] + ("…" if len(text) > HEAD_BYTES else ""))


def content_type(headers: Any) -> str:
    return (headers.get("content-type") or "").split(";")[0].strip().lower() or "no content type"


def _check_choices(event: Any, where: str, fail: Callable[[str], Exception]) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise fail(f"{where} is JSON but not an object ({first_bytes(json.dumps(event))})")
    if "error" in event and "choices" not in event:
        err = event["error"]
        detail = err.get("message") if isinstance(err, dict) else err
        raise fail(f"{where} is an error: {detail}")
    choices = event.get("choices")
    if choices is None and "usage" in event:
        return event  # the usage-only last event of a stream
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise fail(f"{where} has no 'choices' list ({first_bytes(json.dumps(event))})")
    for c in choices:
        for key in ("delta", "message"):
            if key in c and not isinstance(c[key], (dict, type(None))):
                raise fail(f"{where} has a '{key}' that is not an object ({first_bytes(json.dumps(c))})")
        text = (c.get("delta") or c.get("message") or {}).get("content", c.get("text"))
        if text is not None and not isinstance(text, str):
            raise fail(f"{where} has content that is not text ({first_bytes(json.dumps(c))})")
    return event


def events(ctype: str, lines: Iterable[str], read_all: Callable[[], bytes], fail) -> Iterator[dict[str, Any]]:
    """The events of a 200 answer: ``fail(message)`` makes the error to raise."""
    if ctype in ("application/json", "text/json"):
        body = read_all()
        try:
            whole = json.loads(body)
        except ValueError:
            raise fail(f"answered 200 with {ctype} that is not JSON: {first_bytes(body)}") from None
        event = _check_choices(whole, "the JSON answer", fail)
        for c in event.get("choices") or ():
            if "message" in c and "delta" not in c:
                c["delta"] = c["message"]  # one complete message: the same as a one-event stream
        yield event
        return
    if ctype not in ("text/event-stream", "no content type", "text/plain", "application/x-ndjson"):
        raise fail(
            f"answered 200 with {ctype}, not an event stream: {first_bytes(read_all())} "
            "(is the endpoint the URL of an OpenAI-compatible API?)"
        )
    seen = 0
    for line in lines:
        if not line.strip() or line.startswith((":", "event:", "id:", "retry:")):
            continue
        if not line.startswith("data:"):
            raise fail(f"answered 200 with {ctype} whose lines are not events: {first_bytes(line)}")
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError:
            raise fail(f"sent an event that is not JSON: {first_bytes(payload)}") from None
        seen += 1
        yield _check_choices(event, "an event", fail)
    if not seen:
        raise fail(f"answered 200 with {ctype} but sent no events")
