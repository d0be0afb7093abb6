"""The request fields that steer sampling beyond temperature and top_p, read once for every route.

    updates = extras(data)                 # {"grammar": ..., "logprobs": ..., penalties, top_k, min_p, logit_bias}
    params = params.model_copy(update=updates)
    n = choices(data)                      # OpenAI's n: 1 to 8 choices
    refuse_tools(data, model)              # a 400: StarChat models are not trained for tool calls

Structured output: OpenAI's ``response_format`` (``json_object``; ``json_schema`` with
``schema``), llama.cpp's ``json_schema`` and ``grammar`` (GBNF), Ollama's ``format`` (``"json"``
or a schema), each turned into one GBNF grammar for the engine (JSON Schema through
engine/prompting/json_grammar.py). Penalties, ``top_k``, ``min_p``, ``logit_bias`` and the
logprob counts are range checked against engine/params.py's field types; llama.cpp's and
Ollama's other samplers (typical_p, mirostat, DRY, XTC, ...) are 400s unless set to their off
value. Every bad value is an
:class:`~.errors.APIError` (400) naming its field; the Ollama routes re-shape it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from starchat_cli.engine.params import (
    PENALTY_LAST_N,
    Choices,
    FrequencyPenalty,
    GenerationParams,
    Invalid,
    LogitBias,
    MinP,
    PresencePenalty,
    RepeatPenalty,
    TopK,
    TopLogprobs,
    wire_number,
)
from starchat_cli.engine.prompting.json_grammar import JSON_OBJECT_GRAMMAR, SchemaError, schema_grammar

from .errors import APIError

MAX_LOGIT_BIAS = 1024  # entries in one logit_bias object
PENALTIES = {
    "presence_penalty": PresencePenalty,
    "frequency_penalty": FrequencyPenalty,
    "repeat_penalty": RepeatPenalty,
}
PENALTY_OFF = {"presence_penalty": 0.0, "frequency_penalty": 0.0, "repeat_penalty": 1.0}
# llama.cpp's truncation samplers, honoured on sampled replies (temperature > 0).
TRUNCATION = {"top_k": TopK, "min_p": MinP}
# Samplers of llama.cpp and Ollama that starchat does not run, each with the value that turns it
# off: a request may send that value (clients send their defaults), any other is a 400.
UNSUPPORTED_SAMPLERS: dict[str, Any] = {
    "typical_p": 1.0,
    "tfs_z": 1.0,
    "mirostat": 0,
    "dynatemp_range": 0.0,
    "xtc_probability": 0.0,
    "dry_multiplier": 0.0,
    "top_n_sigma": -1.0,
}
TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call")


def _number(value: Any, name: str, spec: Any) -> Any:
    try:
        return wire_number(spec, value)
    except Invalid as exc:
        if exc.number and not exc.in_range:
            raise APIError(
                400, f"'{name}' must be a number from {exc.lo:g} to {exc.hi:g}", param=name
            ) from None
        kind = "a whole number" if exc.kind is int else "a number"
        raise APIError(400, f"'{name}' must be {kind}", param=name) from None


def _schema(schema: Any, name: str, param: str) -> str:
    try:
        return schema_grammar(schema)
    except SchemaError as exc:
        raise APIError(400, f"'{name}': {exc}", param=param) from None


def response_format_grammar(value: Any) -> str | None:
    """OpenAI's ``response_format`` as a grammar: ``{"type": "text"}`` none, ``json_object`` any
    JSON object (or llama-server's ``schema`` beside it), ``json_schema`` its ``json_schema.schema``."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        schema = value.get("schema")
        return (
            JSON_OBJECT_GRAMMAR
            if schema is None
            else _schema(schema, "response_format.schema", "response_format")
        )
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise APIError(
                400,
                "'response_format.json_schema' must be an object with a 'schema'",
                param="response_format",
            )
        schema = spec.get("schema")
        if schema is None:  # OpenAI allows it: any JSON object
            return JSON_OBJECT_GRAMMAR
        return _schema(schema, "response_format.json_schema.schema", "response_format")
    raise APIError(
        400,
        f"'response_format.type' must be 'text', 'json_object' or 'json_schema', not {kind!r}",
        param="response_format",
    )


def structured_grammar(data: dict[str, Any]) -> str | None:
    """The one grammar a body asks for through ``response_format``, ``json_schema`` or ``grammar``."""
    found: dict[str, str] = {}
    rf = response_format_grammar(data.get("response_format"))
    if rf is not None:
        found["response_format"] = rf
    if data.get("json_schema") is not None:
        found["json_schema"] = _schema(data["json_schema"], "json_schema", "json_schema")
    grammar = data.get("grammar")
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise APIError(400, "'grammar' must be a GBNF grammar (a non-empty string)", param="grammar")
        found["grammar"] = grammar
    if len(found) > 1:
        names = " and ".join(f"'{k}'" for k in found)
        raise APIError(400, f"{names} both constrain the output: send one of them", param=next(iter(found)))
    return next(iter(found.values()), None)


def ollama_format_grammar(value: Any) -> str | None:
    """Ollama's ``format``: ``"json"`` (any JSON object) or a JSON schema; ``""`` or null: none."""
    if value in (None, ""):
        return None
    if value == "json":
        return JSON_OBJECT_GRAMMAR
    if isinstance(value, dict):
        return _schema(value, "format", "format")
    raise APIError(400, "'format' must be \"json\" or a JSON schema object", param="format")


def chain_options(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The penalties, ``top_k`` and ``min_p`` given in ``data`` (``prefix``: where they sit, e.g.
    ``options.``), range-checked; a sampler starchat does not run, set to anything but its off
    value, is a 400 naming it (so is ``repeat_last_n`` other than 64 with a penalty on)."""
    for key, off in UNSUPPORTED_SAMPLERS.items():
        value = data.get(key)
        if value is not None and value != off:
            raise APIError(
                400,
                f"'{prefix}{key}' is not supported (starchat samples with top_k, top_p, min_p, temperature "
                f"and the penalties): leave it out or set it to {off:g}",
                param=prefix + key,
            )
    found = {
        key: _number(data[key], prefix + key, spec)
        for key, spec in {**PENALTIES, **TRUNCATION}.items()
        if data.get(key) is not None
    }
    last_n = data.get("repeat_last_n")
    penalized = any(found.get(k, off) != off for k, off in PENALTY_OFF.items())
    if penalized and last_n is not None and last_n != PENALTY_LAST_N:
        raise APIError(
            400,
            f"'{prefix}repeat_last_n' is not supported: the penalties look at the last {PENALTY_LAST_N} "
            f"tokens; leave it out or set it to {PENALTY_LAST_N}",
            param=prefix + "repeat_last_n",
        )
    return found


def logit_bias(value: Any) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``logit_bias``: ``{"token id": bias}``, bias from -100 (banned) to 100."""
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > MAX_LOGIT_BIAS:
        raise APIError(
            400, f"'logit_bias' must be an object of up to {MAX_LOGIT_BIAS} token ids", param="logit_bias"
        )
    out = []
    for key, bias in value.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) < 10):
            raise APIError(
                400, f"'logit_bias' keys must be token ids (\"50256\"), not {key!r}", param="logit_bias"
            )
        out.append((int(key), float(_number(bias, f"logit_bias.{key}", LogitBias))))
    return tuple(out)


def native_logit_bias(value: Any) -> tuple[tuple[int | str, float], ...]:
    """llama.cpp's ``logit_bias`` on /completion and /infill: ``[[token, bias], ...]`` or
    ``{token: bias}``, a token being an id or a text (every token of that text gets the bias,
    :func:`resolve_text_bias`), a bias ``false`` meaning banned (-100)."""
    if value is None:
        return ()
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, list) or len(pairs) > MAX_LOGIT_BIAS:
        raise APIError(
            400,
            f"'logit_bias' must be a list or object of up to {MAX_LOGIT_BIAS} entries",
            param="logit_bias",
        )
    out: list[tuple[int | str, float]] = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise APIError(400, f"logit_bias[{i}] must be a [token, bias] pair", param="logit_bias")
        token, bias = pair
        if isinstance(token, str) and token.isdigit() and len(token) < 10:
            token = int(token)  # an object's keys are strings: "50256" is an id, as in OpenAI's form
        if isinstance(token, bool) or not isinstance(token, (int, str)) or token == "":
            raise APIError(
                400, f"logit_bias[{i}]: a token is an id or a text, not {token!r}", param="logit_bias"
            )
        if isinstance(token, int) and token < 0:
            raise APIError(400, f"logit_bias[{i}]: token ids are >= 0, not {token}", param="logit_bias")
        banned = bias is False
        value_ = -100.0 if banned else float(_number(bias, f"logit_bias[{i}]", LogitBias))
        out.append((token, value_))
    return tuple(out)


def resolve_text_bias(
    params: GenerationParams, texts: Sequence[tuple[str, float]], tokenize: Callable[[str], list[int] | None]
) -> GenerationParams:
    """``params`` with each text's tokens biased too (``tokenize`` without special tokens)."""
    if not texts:
        return params
    extra: list[tuple[int, float]] = []
    for text, bias in texts:
        ids = tokenize(text)
        if ids is None:
            raise APIError(
                400,
                "'logit_bias' by text needs a local model's tokenizer: give token ids",
                param="logit_bias",
            )
        extra.extend((t, bias) for t in ids)
    return params.model_copy(update={"logit_bias": (*params.logit_bias, *extra)})


def chat_logprobs(data: dict[str, Any]) -> int | None:
    """Chat's ``logprobs: true`` with ``top_logprobs`` alternatives (0 to 20): the count, or None."""
    top = data.get("top_logprobs")
    if data.get("logprobs") is not True:
        if top is not None:
            raise APIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        return None
    return 0 if top is None else int(_number(top, "top_logprobs", TopLogprobs))


def text_logprobs(data: dict[str, Any]) -> int | None:
    """Legacy completions' ``logprobs: k``: k alternatives per token (0 to 20), or None."""
    value = data.get("logprobs")
    return None if value is None else int(_number(value, "logprobs", TopLogprobs))


def extras(data: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    """GenerationParams updates for an OpenAI or llama.cpp body (only the fields it gives)."""
    updates: dict[str, Any] = dict(chain_options(data))
    grammar = structured_grammar(data)
    if grammar is not None:
        updates["grammar"] = grammar
    bias = logit_bias(data.get("logit_bias"))
    if bias:
        updates["logit_bias"] = bias
    top = chat_logprobs(data) if chat else text_logprobs(data)
    if top is not None:
        updates["logprobs"] = top
    return updates


def choices(data: dict[str, Any]) -> int:
    """OpenAI's ``n``: how many choices (generated one after another), 1 to 8."""
    value = data.get("n")
    return 1 if value is None else int(_number(value, "n", Choices))


def tools_message(model: str, field: str) -> str:
    """The one refusal of tool calling, on every route (Continue reads "does not support tools")."""
    return (
        f"model '{model}' does not support tools ('{field}'): StarChat models are not trained for "
        "tool calls; send the request without tools"
    )


def refuse_tools(data: dict[str, Any], model: str) -> None:
    """A 400 for tools or functions offered, or a tool call demanded; an empty list, or
    ``tool_choice`` "none"/"auto" with no tools, asks for nothing and passes."""
    for field in TOOL_FIELDS:
        value = data.get(field)
        if value in (None, [], "none", "auto"):
            continue
        raise APIError(400, tools_message(model, field), code="tools_not_supported", param=field)


__all__ = [
    "PENALTIES",
    "TOOL_FIELDS",
    "TRUNCATION",
    "UNSUPPORTED_SAMPLERS",
    "choices",
    "chat_logprobs",
    "extras",
    "logit_bias",
    "native_logit_bias",
    "resolve_text_bias",
    "ollama_format_grammar",
    "chain_options",
    "refuse_tools",
    "response_format_grammar",
    "structured_grammar",
    "text_logprobs",
    "tools_message",
]
