"""Request bodies, read and checked before any generation starts.

:func:`read_json` (from :mod:`.body`) reads a bounded JSON object; :func:`parse_completion`
turns a ``/v1/chat/completions`` or ``/v1/completions`` body into a
:class:`CompletionRequest`: the model name (:mod:`.names`), the sampling parameters, and the chat
messages as engine turns plus a system prompt (or the raw prompt). Every bad value is a
400 :class:`~starchat_cli.server.errors.APIError` naming the parameter; sampling values are
checked against ``engine/params.py``'s field types (their ranges are written there only).

Types come first, from one table (:data:`FIELD_TYPES`, :data:`NESTED_TYPES`), as
OpenAI's API checks them (:mod:`.jsontypes`): ``"stream": "false"`` is a 400 naming
``stream``, and ``null`` is "not given". Fields not in the table are ignored. A new field
is one line in the table. The messages and prompts are read by :mod:`.messages`; the fields
that steer sampling beyond temperature and top_p (structured output, penalties, logit_bias,
logprobs, n, tools) by :mod:`.sampling`.
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
from starchat_cli.engine.prompting.formats import Message

from .body import parse_json, read_json
from .config import ServerConfig
from .errors import APIError
from .jsontypes import ARRAY, BOOLEAN, INTEGER, NUMBER, OBJECT, STRING, check_type
from .messages import MAX_PROMPTS, chat_turns, completion_prompts
from .sampling import choices, extras, refuse_tools

Kind = Literal["chat", "text"]  # /v1/chat/completions or /v1/completions

MAX_STOPS = 8
# OpenAI's documented default for the legacy /v1/completions endpoint's max_tokens.
COMPLETIONS_MAX_TOKENS = 16


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
    # llama.cpp's own: structured output and its penalty (llama-server takes them on both routes)
    "response_format": (OBJECT,),
    "json_schema": (OBJECT,),
    "grammar": (STRING,),
    "repeat_penalty": (NUMBER,),
    "repeat_last_n": (INTEGER,),
    "top_k": (INTEGER,),
    "min_p": (NUMBER,),
}
FIELD_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "chat": {
        **COMMON_TYPES,
        "messages": (ARRAY,),
        "max_completion_tokens": (INTEGER,),
        "logprobs": (BOOLEAN,),
        "top_logprobs": (INTEGER,),
        "tools": (ARRAY,),
        "tool_choice": (STRING, OBJECT),
        "functions": (ARRAY,),
        "function_call": (STRING, OBJECT),
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
    "response_format": {"type": (STRING,), "json_schema": (OBJECT,), "schema": (OBJECT,)},
    "prediction": {"type": (STRING,), "content": (STRING, ARRAY)},
}


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


def sampling_params(
    data: dict[str, Any], config: ServerConfig, default_max: int | None = None
) -> GenerationParams:
    """max_tokens (or max_completion_tokens), temperature, top_p, seed and stop, range-checked.

    Without max_tokens: the config's default when set, else ``default_max`` (/v1/completions:
    OpenAI's 16), else up to the server's limit (the reply ends at its end of turn or the context)."""
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
        max_tokens=_number(
            data,
            "max_tokens",
            min(config.default_max_tokens or default_max or limit, limit),
            capped(MaxTokens, limit),
        ),
        temperature=_number(data, "temperature", config.default_temperature, Temperature),
        top_p=_number(data, "top_p", config.default_top_p, TopP),
        seed=_number(data, "seed", config.default_seed, WireSeed),
        stop=tuple(stop),
    )


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


@dataclass(frozen=True)
class CompletionRequest:
    """A checked completion request: what to generate, with what, and how to answer."""

    kind: Kind
    params: GenerationParams
    turns: tuple[Message, ...] = ()  # chat
    system: str | None = None  # chat
    prompts: tuple[str | tuple[int, ...], ...] = ()  # text: one choice each (text or token ids)
    suffix: str | None = None  # text: the text after the middle (fill-in-the-middle)
    stream: bool = False
    include_usage: bool = False  # streaming: end with a usage chunk
    n: int = 1  # choices, generated one after another (seeds seed, seed + 1, ...)
    echo: bool = False  # text: the prompt goes before each choice's text


def parse_completion(data: dict[str, Any], config: ServerConfig, kind: Kind) -> CompletionRequest:
    """Check a completion body in a fixed order (types, model, tools, sampling, messages or prompt)."""
    check_types(data, kind)
    check_model(data, config)
    refuse_tools(data, config.model_name)
    params = sampling_params(data, config, COMPLETIONS_MAX_TOKENS if kind == "text" else None)
    params = params.model_copy(update=extras(data, chat=kind == "chat"))
    n = choices(data)
    echo = data.get("echo") is True
    best_of = data.get("best_of")
    if best_of is not None and best_of != n:
        raise APIError(
            400, "'best_of' is not supported: leave it out or make it equal to 'n'", param="best_of"
        )
    if echo and params.logprobs is not None:
        raise APIError(
            400, "'echo' with 'logprobs' is not supported (no logprobs for prompt tokens)", param="echo"
        )
    turns: tuple[Message, ...] = ()
    system: str | None = None
    prompts: tuple[str | tuple[int, ...], ...] = ()
    suffix = None
    if kind == "chat":
        chat, system = chat_turns(data)
        turns = tuple(chat)
    else:
        prompts = completion_prompts(data)
        suffix = data.get("suffix")
        if suffix is not None and not isinstance(suffix, str):
            raise APIError(400, "'suffix' must be a string", param="suffix")
        if suffix is not None and not all(isinstance(p, str) for p in prompts):
            raise APIError(400, "'suffix' needs a text prompt, not token ids", param="suffix")
        if echo and not all(isinstance(p, str) for p in prompts):
            raise APIError(400, "'echo' needs a text prompt, not token ids", param="echo")
        if len(prompts) * n > MAX_PROMPTS:
            raise APIError(
                400,
                f"{len(prompts)} prompts times n={n} is more than {MAX_PROMPTS} choices: send fewer",
                param="n",
            )
    prediction = prediction_text(data) if kind == "chat" else None
    params = params.model_copy(update={"draft": config.draft, "prediction": prediction})
    return CompletionRequest(
        kind=kind,
        params=params,
        turns=turns,
        system=system,
        prompts=prompts,
        suffix=suffix,
        stream=data.get("stream") is True,
        include_usage=(data.get("stream_options") or {}).get("include_usage") is True,
        n=n,
        echo=echo,
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
    "completion_prompts",
    "parse_completion",
    "parse_json",
    "read_json",
    "sampling_params",
]
