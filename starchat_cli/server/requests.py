"""Request bodies, read and checked before any generation starts.

:func:`read_json` (from :mod:`.body`) reads a bounded JSON object; :func:`parse_completion`
turns a ``/v1/chat/completions`` or ``/v1/completions`` body into a
:class:`CompletionRequest`: the model name (:mod:`.names`), the sampling parameters, and the chat
messages as engine turns plus a system prompt (or the raw prompt). Every bad value is a
400 :class:`~starchat_cli.server.errors.APIError` naming the parameter; sampling values are
checked against ``engine/params.py``'s field types (their ranges are written there only).

Types come first, from one table (:data:`FIELD_TYPES`, :data:`NESTED_TYPES`), as
OpenAI's API checks them: a boolean must be a JSON boolean (``"stream": "false"`` is a
400 naming ``stream``), a number a JSON number (not a string, not a boolean), an integer
a number with no fraction (``3.0`` passes, as in JSON Schema, which OpenAI validates
with; ``3.5`` does not), and ``null`` is "not given". Fields not in the table are
ignored. A new field is one line in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from starchat_cli.engine.params import (
    GenerationParams,
    Invalid,
    MaxTokens,
    Temperature,
    TopP,
    WireSeed,
    capped,
    wire_number,
)
from starchat_cli.engine.prompting.formats import Message, merge_turns

from .body import parse_json, read_json
from .config import ServerConfig
from .errors import APIError

Kind = Literal["chat", "text"]  # /v1/chat/completions or /v1/completions

MAX_STOPS = 8

# JSON types, named as in OpenAI's errors.
BOOLEAN, INTEGER, NUMBER, STRING, ARRAY, OBJECT = "boolean", "integer", "number", "string", "array", "object"

# Every field a completion body may have, per endpoint, with its allowed JSON types
# (null is always allowed: "not given"). Fields we accept but do not act on are typed
# too, so a client's mistake is reported the same as with OpenAI.
COMMON_TYPES: dict[str, tuple[str, ...]] = {
    "model": (STRING,),
    "max_tokens": (INTEGER,),
    "temperature": (NUMBER,),
    "top_p": (NUMBER,),
    "seed": (INTEGER,),
    "stop": (STRING, ARRAY),
    "stream": (BOOLEAN,),
    "stream_options": (OBJECT,),
    "n": (INTEGER,),
    "presence_penalty": (NUMBER,),
    "frequency_penalty": (NUMBER,),
    "logit_bias": (OBJECT,),
    "user": (STRING,),
}
FIELD_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "chat": {
        **COMMON_TYPES,
        "messages": (ARRAY,),
        "max_completion_tokens": (INTEGER,),
        "response_format": (OBJECT,),
        "logprobs": (BOOLEAN,),
        "top_logprobs": (INTEGER,),
        "tools": (ARRAY,),
        "tool_choice": (STRING, OBJECT),
        "parallel_tool_calls": (BOOLEAN,),
        "prediction": (OBJECT,),
        "metadata": (OBJECT,),
        "store": (BOOLEAN,),
    },
    "text": {
        **COMMON_TYPES,
        "prompt": (STRING, ARRAY),
        "suffix": (STRING,),
        "echo": (BOOLEAN,),
        "best_of": (INTEGER,),
        "logprobs": (INTEGER,),
    },
}
# Fields inside the nested objects above, named "outer.inner" in errors.
NESTED_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "stream_options": {"include_usage": (BOOLEAN,)},
    "response_format": {"type": (STRING,), "json_schema": (OBJECT,)},
    "prediction": {"type": (STRING,), "content": (STRING, ARRAY)},
}
# Each chat message's fields (messages[i].name in errors).
MESSAGE_TYPES: dict[str, tuple[str, ...]] = {
    "role": (STRING,),
    "content": (STRING, ARRAY),
    "name": (STRING,),
}

_ARTICLE = {INTEGER: "an integer", ARRAY: "an array", OBJECT: "an object"}


def json_type(value: Any) -> str:
    """The JSON type of a decoded value; integral floats count as integers too (see below)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return "decimal number"
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return ARRAY
    return OBJECT


def _fits(value: Any, allowed: tuple[str, ...]) -> bool:
    got = json_type(value)
    if got == "null" or got in allowed:
        return True
    if got == INTEGER and NUMBER in allowed:
        return True
    if got == "decimal number":
        return NUMBER in allowed or (INTEGER in allowed and float(value).is_integer())
    return False


def check_type(value: Any, allowed: tuple[str, ...], name: str, param: str | None = None) -> None:
    """A 400 naming ``name`` unless ``value`` is null or one of the ``allowed`` JSON types."""
    if _fits(value, allowed):
        return
    expected = " or ".join(_ARTICLE.get(t, f"a {t}") for t in allowed)
    got = json_type(value)
    raise APIError(
        400,
        f"Invalid type for '{name}': expected {expected}, but got {_ARTICLE.get(got, f'a {got}')} instead.",
        code="invalid_type",
        param=param or name,
    )


def check_types(data: dict[str, Any], kind: Kind) -> None:
    """Every known field of a ``kind`` body, and of its nested objects, has an allowed type."""
    check_fields(data, FIELD_TYPES[kind], NESTED_TYPES)


def check_fields(
    data: dict[str, Any],
    types: dict[str, tuple[str, ...]],
    nested: dict[str, dict[str, tuple[str, ...]]] | None = None,
) -> None:
    """``data``'s fields named in ``types`` (and in ``nested`` objects) have an allowed type;
    other routes (``/infill``) check their bodies with their own tables through this."""
    for key, allowed in types.items():
        value = data.get(key)
        check_type(value, allowed, key)
        if isinstance(value, dict) and nested and key in nested:
            for inner, inner_allowed in nested[key].items():
                check_type(value.get(inner), inner_allowed, f"{key}.{inner}", key)


def check_model(data: dict[str, Any], config: ServerConfig) -> str:
    """The name the reply reports: the served model's, whatever the request named (noted once per
    name); a 404 for another model's name only under ``serve --strict-model`` (:mod:`.names`)."""
    return config.names.resolve(data.get("model"))


def _number(data: dict[str, Any], key: str, default: Any, spec: Any) -> Any:
    """``data[key]`` checked against the field type ``spec`` (engine/params.py); ``default``
    when absent or null."""
    value = data.get(key)
    if value is None:
        return default
    try:
        return wire_number(spec, value)
    except Invalid as exc:
        if exc.in_range:  # a fraction where a whole number goes
            raise APIError(400, f"'{key}' must be a whole number", param=key) from None
        raise APIError(400, f"'{key}' must be a number from {exc.lo} to {exc.hi}", param=key) from None


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
    limit = config.max_tokens_limit
    return GenerationParams(
        max_tokens=_number(data, "max_tokens", config.default_max_tokens or limit, capped(MaxTokens, limit)),
        temperature=_number(data, "temperature", config.default_temperature, Temperature),
        top_p=_number(data, "top_p", config.default_top_p, TopP),
        seed=_number(data, "seed", None, WireSeed),
        stop=tuple(stop),
    )


def _text(content: Any, i: int) -> Any:
    """A message's content: a string, or its text parts joined (other parts are a 400)."""
    if not isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        name = f"messages[{i}].content[{j}]"
        check_type(part, (OBJECT,), name, "messages")
        if not isinstance(part, dict):  # null
            raise APIError(400, f"{name} must be an object", param="messages")
        check_type(part.get("type"), (STRING,), f"{name}.type", "messages")
        if part.get("type") != "text":
            raise APIError(
                400,
                f"{name}.type {part.get('type')!r} is not supported: this model reads text parts only",
                param="messages",
            )
        text = part.get("text")
        check_type(text, (STRING,), f"{name}.text", "messages")
        texts.append(text or "")
    return "".join(texts)


def prediction_text(data: dict[str, Any]) -> str | None:
    """OpenAI's predicted output, ``{"type": "content", "content": str | text parts}``: text the
    reply is expected to copy, a source for drafted decoding (it changes speed, never the text)."""
    prediction = data.get("prediction")
    if prediction is None:
        return None
    content = prediction.get("content") if isinstance(prediction, dict) else None
    if isinstance(content, list):  # text parts, as in messages
        content = "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    if (
        not isinstance(prediction, dict)
        or prediction.get("type") != "content"
        or not isinstance(content, str)
    ):
        raise APIError(
            400, '\'prediction\' must be an object {"type": "content", "content": string}', param="prediction"
        )
    return content or None


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
        for key, allowed in MESSAGE_TYPES.items():
            check_type(msg.get(key), allowed, f"messages[{i}].{key}", "messages")
        role, content = msg.get("role"), _text(msg.get("content"), i)
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
    suffix: str | None = None  # text: the text after the middle (fill-in-the-middle)
    stream: bool = False
    include_usage: bool = False  # streaming: end with a usage chunk


def parse_completion(data: dict[str, Any], config: ServerConfig, kind: Kind) -> CompletionRequest:
    """Check a completion body in a fixed order (types, model, sampling, messages or prompt)."""
    check_types(data, kind)
    check_model(data, config)
    params = sampling_params(data, config)
    turns: tuple[Message, ...] = ()
    system: str | None = None
    prompt = ""
    suffix = None
    if kind == "chat":
        chat, system = chat_turns(data)
        turns = tuple(chat)
    else:
        prompt = completion_prompt(data)
        suffix = data.get("suffix")
        if suffix is not None and not isinstance(suffix, str):
            raise APIError(400, "'suffix' must be a string", param="suffix")
    prediction = prediction_text(data) if kind == "chat" else None
    params = params.model_copy(update={"draft": config.draft, "prediction": prediction})
    return CompletionRequest(
        kind=kind,
        params=params,
        turns=turns,
        system=system,
        prompt=prompt,
        suffix=suffix,
        stream=data.get("stream") is True,
        include_usage=(data.get("stream_options") or {}).get("include_usage") is True,
    )


__all__ = [
    "CompletionRequest",
    "Kind",
    "FIELD_TYPES",
    "NESTED_TYPES",
    "chat_turns",
    "check_fields",
    "check_model",
    "check_type",
    "check_types",
    "completion_prompt",
    "parse_completion",
    "parse_json",
    "read_json",
    "sampling_params",
]
