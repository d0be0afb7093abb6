"""Ollama request bodies (``/api/generate``, ``/api/chat``, ``/api/show``), read and checked by hand.

Every field is type-checked exactly (bools are bools, numbers are numbers): a bad value is
an :class:`OllamaError` (400) naming the field, in Ollama's ``{"error": "..."}`` shape.
Model names are Ollama-style: the served model's name, with or without a ``:tag``
(``latest`` or the served quantization); another name gets the served model, reported under its
own name (a 404 ``model 'x' not found`` under ``serve --strict-model``: :mod:`.names`).

Options honoured: ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``num_predict``, ``stop``,
``seed``, ``repeat_penalty``, ``presence_penalty``, ``frequency_penalty``. Samplers starchat does
not run (``typical_p``, ``tfs_z``, ``mirostat``, ``repeat_last_n`` other than 64 with a penalty
on) are a 400 unless set to their off value. Accepted without effect: ``num_ctx`` (the context
is fixed when ``serve`` starts: ``--ctx``; a longer prompt is an error, never cut silently) and
the load-time options (``num_gpu``, ``num_thread``, ``num_batch``, ``use_mmap``, ...), which
change how fast, never what is written. Honoured too:
``format`` (``"json"`` or a JSON schema: the reply is sampled under its grammar) and
``logprobs``/``top_logprobs``. Refused with a 400: ``images``, ``template`` and ``think``, and
``tools`` on ``/api/chat`` (with the OpenAI route's words); starchat cannot honour them, and
silently ignoring them would give wrong answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from starchat_cli.engine.params import GenerationParams, Invalid, Temperature, TopP, capped, wire_number
from starchat_cli.engine.prompting.formats import Message

from .config import ServerConfig
from .errors import APIError, OllamaError
from .messages import chat_turns
from .names import ollama_name
from .sampling import chain_options, chat_logprobs, ollama_format_grammar, tools_message

# Editors send many stops for completion (Continue: one per language construct); Ollama has no limit.
MAX_STOPS = 64
# Ollama's own option types (the sampling ones are engine/params.py's).
NumPredict = Annotated[int, Field(ge=-2)]  # -1: until the model stops; -2: fill the context
NumCtx = Annotated[int, Field(ge=1, le=10_000_000)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]  # a seed: negative is "random"


def _bad(field: str, what: str) -> OllamaError:
    return OllamaError(400, f"invalid request: '{field}' must be {what}")


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(key, "a string")
    return value


def _opt_bool(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(key, "true or false")
    return value


def _num(opts: dict[str, Any], key: str, spec: Any) -> Any:
    """``options[key]`` checked against the field type ``spec`` (engine/params.py for the sampling
    ones); None when absent or null."""
    value = opts.get(key)
    if value is None:
        return None
    try:
        return wire_number(spec, value)
    except Invalid as exc:
        if not exc.number:
            raise _bad(f"options.{key}", "a whole number" if exc.kind is int else "a number") from None
        raise _bad(f"options.{key}", f"from {exc.lo:g} to {exc.hi:g}") from None


def served_name(config: ServerConfig) -> str:
    """The served model's Ollama name (``NAME:TAG``): its own tag, else ``latest``."""
    return ollama_name(config.model_name)


def check_model(data: dict[str, Any], config: ServerConfig, quant: str, *, key: str = "model") -> str:
    """The model name the reply reports: the request's own when it names the served model (with or
    without a ``:tag``), else the served model's (:mod:`.names`; a 404 under ``--strict-model``).
    No name is a 400, as in Ollama."""
    name = data.get(key)
    if key == "model" and name is None:
        name = data.get("name")  # the older field, still sent by Continue to /api/show
    if name is None or name == "":
        raise OllamaError(400, "model is required")
    if not isinstance(name, str):
        raise _bad(key, "a string")
    return config.names.resolve(name, quant=quant, ollama=True)


def options(data: dict[str, Any], config: ServerConfig) -> GenerationParams:
    """``options`` as the engine's sampling parameters (see the module's docstring)."""
    opts = data.get("options")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise _bad("options", "an object")
    limit = config.max_tokens_limit
    predict = _num(opts, "num_predict", capped(NumPredict, limit))
    if predict == 0:
        raise _bad("options.num_predict", f"from 1 to {limit}, or -1 for no limit")
    if predict is None or predict < 0:  # -1: until the model stops; -2: fill the context
        predict = config.default_max_tokens or limit
    _num(opts, "num_ctx", NumCtx)  # accepted: the context is fixed at start
    temperature = _num(opts, "temperature", Temperature)
    top_p = _num(opts, "top_p", TopP)
    seed = _num(opts, "seed", Int64)
    stop = opts.get("stop")
    if stop is None:
        stop = []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > MAX_STOPS:
        raise _bad("options.stop", f"a list of up to {MAX_STOPS} strings")
    try:
        extra = chain_options(opts, "options.")
    except APIError as exc:
        raise OllamaError.of(exc) from None
    return GenerationParams(
        max_tokens=predict,
        temperature=config.default_temperature if temperature is None else temperature,
        top_p=config.default_top_p if top_p is None else top_p,
        seed=config.default_seed if seed is None else None if seed < 0 else seed % 2**32,  # -1: random
        stop=tuple(s for s in stop if s),
    ).model_copy(update=extra)


def _steering(data: dict[str, Any], params: GenerationParams) -> GenerationParams:
    """``params`` with ``format`` (a grammar) and ``logprobs``/``top_logprobs`` applied."""
    try:
        grammar = ollama_format_grammar(data.get("format"))
        logprobs = chat_logprobs({"logprobs": data.get("logprobs"), "top_logprobs": data.get("top_logprobs")})
    except APIError as exc:
        raise OllamaError.of(exc) from None
    if data.get("logprobs") not in (None, True, False):
        raise _bad("logprobs", "true or false")
    return params.model_copy(update={"grammar": grammar, "logprobs": logprobs})


def _common(data: dict[str, Any]) -> bool:
    """The fields both routes share and starchat refuses or ignores; returns ``stream``."""
    stream = _opt_bool(data, "stream", True)  # Ollama streams unless told not to
    keep_alive = data.get("keep_alive")
    if keep_alive is not None and (
        isinstance(keep_alive, bool) or not isinstance(keep_alive, (int, float, str))
    ):
        raise _bad("keep_alive", 'a duration ("5m") or a number of seconds')
    think = data.get("think")
    if think not in (None, False):
        raise OllamaError(400, "'think' is not supported: this model does not think")
    return stream


def _no_images(value: Any, field: str) -> None:
    if value is None or value == []:
        return
    if not isinstance(value, list):
        raise _bad(field, "a list")
    raise OllamaError(400, f"'{field}' is not supported: starchat's models read text only")


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    params: GenerationParams
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    raw: bool = False
    stream: bool = True

    @property
    def load_only(self) -> bool:
        """An empty prompt loads the model and answers at once (``done_reason`` "load")."""
        return not self.prompt and not self.suffix


def parse_generate(data: dict[str, Any], config: ServerConfig, quant: str) -> GenerateRequest:
    model = check_model(data, config, quant)
    prompt = _opt_str(data, "prompt") or ""
    suffix = _opt_str(data, "suffix")
    system = _opt_str(data, "system")
    if _opt_str(data, "template"):
        raise OllamaError(
            400,
            "'template' is not supported: starchat renders the model's own prompt format; "
            "send raw: true with a prompt you formatted yourself",
        )
    raw = _opt_bool(data, "raw", False)
    context = data.get("context")
    if context is not None and (
        not isinstance(context, list)
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in context)
    ):
        raise _bad("context", "a list of token ids")
    _no_images(data.get("images"), "images")
    stream = _common(data)
    params = _steering(data, options(data, config))
    return GenerateRequest(model, params, prompt, suffix or None, system, raw, stream)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    params: GenerationParams
    turns: tuple[Message, ...] = ()
    system: str | None = None
    stream: bool = True

    @property
    def load_only(self) -> bool:
        return not self.turns


def parse_chat(data: dict[str, Any], config: ServerConfig, quant: str) -> ChatRequest:
    model = check_model(data, config, quant)
    tools = data.get("tools")
    if tools not in (None, []):
        raise OllamaError(400, tools_message(model, "tools"))
    stream = _common(data)
    params = _steering(data, options(data, config))
    messages = data.get("messages")
    if messages is None or messages == []:
        return ChatRequest(model, params, stream=stream)  # load the model, as Ollama does
    if not isinstance(messages, list):
        raise _bad("messages", "a list")
    for i, msg in enumerate(messages):
        if isinstance(msg, dict):
            _no_images(msg.get("images"), f"messages[{i}].images")
            if msg.get("tool_calls"):
                raise OllamaError(400, tools_message(model, f"messages[{i}].tool_calls"))
    try:
        turns, system = chat_turns({"messages": messages})
    except APIError as exc:
        raise OllamaError.of(exc) from None
    return ChatRequest(model, params, tuple(turns), system, stream)


__all__ = [
    "ChatRequest",
    "GenerateRequest",
    "check_model",
    "options",
    "parse_chat",
    "parse_generate",
    "served_name",
]
