"""Request bodies, read and checked by hand before any generation starts.

:func:`read_json` reads a bounded JSON object (413 past the limit); :func:`parse_completion`
turns a ``/v1/chat/completions`` or ``/v1/completions`` body into a
:class:`CompletionRequest`: the model check (404), the sampling parameters, and the chat
messages as engine turns plus a system prompt (or the raw prompt). Every bad value is a
400 :class:`~starchat_cli.server.errors.APIError` naming the parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from starlette.requests import ClientDisconnect, Request

from starchat_cli.engine.contract import GenerationParams
from starchat_cli.engine.prompts import Message, merge_turns

from .config import ServerConfig
from .errors import APIError

Kind = Literal["chat", "text"]  # /v1/chat/completions or /v1/completions

MAX_STOPS = 8


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, read no further than ``max_bytes``."""
    too_large = APIError(413, f"request body over {max_bytes} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_large
    except ClientDisconnect:
        raise APIError(400, "client disconnected") from None
    return parse_json(body)


def parse_json(body: bytes) -> dict[str, Any]:
    """A request body's JSON object, or a 400 ``invalid_json``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    return data


def check_model(data: dict[str, Any], config: ServerConfig) -> None:
    """A 404 when the request names a model this server does not serve (no name is fine)."""
    model = data.get("model")
    if model is not None and model not in config.served_names:
        raise APIError(
            404,
            f"model {model!r} is not served here; this server has {config.model_name!r}",
            code="model_not_found",
            param="model",
        )


def _number(data: dict[str, Any], key: str, default: Any, lo: float, hi: float, kind: type = float) -> Any:
    """``data[key]`` as a ``kind`` from ``lo`` to ``hi``; ``default`` when absent or null."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise APIError(400, f"'{key}' must be a number from {lo} to {hi}", param=key)
    if kind is int and int(value) != value:
        raise APIError(400, f"'{key}' must be a whole number", param=key)
    return kind(value)


def sampling_params(data: dict[str, Any], config: ServerConfig) -> GenerationParams:
    """max_tokens (or max_completion_tokens), temperature, top_p, seed and stop, range-checked."""
    data = {**data, "max_tokens": data.get("max_completion_tokens", data.get("max_tokens"))}
    stop = data.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if (
        not isinstance(stop, (list, tuple))
        or not all(isinstance(s, str) for s in stop)
        or len(stop) > MAX_STOPS
    ):
        raise APIError(400, f"'stop' must be a string or a list of up to {MAX_STOPS} strings", param="stop")
    return GenerationParams(
        max_tokens=_number(
            data,
            "max_tokens",
            config.default_max_tokens or config.max_tokens_limit,
            1,
            config.max_tokens_limit,
            int,
        ),
        temperature=_number(data, "temperature", config.default_temperature, 0.0, 5.0),
        top_p=_number(data, "top_p", config.default_top_p, 0.0, 1.0),
        seed=_number(data, "seed", None, 0, 2**32 - 1, int),
        stop=tuple(stop),
    )


def prediction_text(data: dict[str, Any]) -> str | None:
    """OpenAI's predicted output, ``{"type": "content", "content": str | text parts}``: text the
    reply is expected to copy, a source for drafted decoding (it changes speed, never the text)."""
    prediction = data.get("prediction")
    if prediction is None:
        return None
    content = _text(prediction.get("content")) if isinstance(prediction, dict) else None
    if (
        not isinstance(prediction, dict)
        or prediction.get("type") != "content"
        or not isinstance(content, str)
    ):
        raise APIError(
            400, '\'prediction\' must be an object {"type": "content", "content": string}', param="prediction"
        )
    return content or None


def _text(content: Any) -> Any:
    """A message's content: a string, or the text parts of a list of parts joined."""
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content


def chat_turns(data: dict[str, Any]) -> tuple[list[Message], str | None]:
    """The messages as user/assistant turns (runs of one role merged) and the system prompt.

    System (or developer) messages must come first and are joined into one; the
    conversation must start and end with a user message.
    """
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    system: str | None = None
    turns: list[Message] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise APIError(400, f"messages[{i}] must be an object", param="messages")
        role, content = msg.get("role"), _text(msg.get("content"))
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string", param="messages")
        if role in ("system", "developer"):
            if turns:
                raise APIError(400, "system messages must come first", param="messages")
            system = content if system is None else f"{system}\n\n{content}"
        elif role in ("user", "assistant"):
            turns.append(Message(role, content))
        else:
            raise APIError(
                400,
                f"messages[{i}].role {role!r} is not supported (system, user, assistant)",
                param="messages",
            )
    turns = merge_turns(turns)
    if not turns or turns[0].role != "user" or turns[-1].role != "user":
        raise APIError(400, "the conversation must start and end with a user message", param="messages")
    return turns, system


def completion_prompt(data: dict[str, Any]) -> str:
    """A /v1/completions prompt: a string, or a list holding one string."""
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string", param="prompt")
    return prompt


@dataclass(frozen=True)
class CompletionRequest:
    """A checked completion request: what to generate, with what, and how to answer."""

    kind: Kind
    params: GenerationParams
    turns: tuple[Message, ...] = ()  # chat
    system: str | None = None  # chat
    prompt: str = ""  # text
    stream: bool = False
    include_usage: bool = False  # streaming: end with a usage chunk


def parse_completion(data: dict[str, Any], config: ServerConfig, kind: Kind) -> CompletionRequest:
    """Check a completion body in a fixed order (model, sampling, messages or prompt)."""
    check_model(data, config)
    params = sampling_params(data, config)
    turns: tuple[Message, ...] = ()
    system: str | None = None
    prompt = ""
    if kind == "chat":
        chat, system = chat_turns(data)
        turns = tuple(chat)
    else:
        prompt = completion_prompt(data)
    prediction = prediction_text(data) if kind == "chat" else None
    params = replace(params, draft=config.draft, prediction=prediction)
    return CompletionRequest(
        kind=kind,
        params=params,
        turns=turns,
        system=system,
        prompt=prompt,
        stream=bool(data.get("stream")),
        include_usage=bool((data.get("stream_options") or {}).get("include_usage")),
    )


__all__ = [
    "CompletionRequest",
    "Kind",
    "chat_turns",
    "check_model",
    "completion_prompt",
    "parse_completion",
    "read_json",
    "sampling_params",
]
