"""``POST /infill``: llama.cpp's fill-in-the-middle endpoint, as llama.vim and llama.vscode call it.

Request fields (llama.cpp's names; unknown fields are accepted and ignored; known ones are
typed as strictly as on the OpenAI routes, from :data:`FIELD_TYPES`):
``input_prefix``, ``input_suffix``, ``input_extra`` (``[{"filename", "text"}]``, repository
context; a chunk without ``text`` is a 400, as in llama.cpp), ``prompt`` (text at the cursor, placed after the prefix), ``n_predict`` (-1: up to the
server's limit), ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``stop``,
``seed``, ``grammar`` (GBNF) or ``json_schema`` (the middle is sampled under it),
``repeat_penalty``, ``presence_penalty``, ``frequency_penalty``, ``n_probs`` (up to 20: each
token's log-probability under the model with the ``n_probs`` likeliest alternatives, as
``completion_probabilities``; ``post_sampling_probs`` is a 400), ``logit_bias`` (llama.cpp's
forms: ``[[token, bias]]`` or ``{token: bias}``, a token an id or a text whose every token gets
the bias, ``false`` for banned), ``t_max_predict_ms`` (after that long, stop at the next newline), ``n_indent`` (stop
at a later line indented less, an empty one included, that line left out), ``cache_prompt`` (always on: the KV prefix
in memory is reused), ``stream``, ``response_fields`` (answer only these, nested ones as
``"timings/prompt_n"`` keys, as llama.cpp does).

The answer is llama.cpp's: ``content``, ``stop``, ``stop_type``, ``tokens_predicted``,
``tokens_evaluated``, ``tokens_cached`` (as llama.cpp counts it: the tokens in the context at the
end, prompt and reply, the last sampled token left out unless it was fed back), ``truncated``, ``timings``
(``prompt_n`` = tokens evaluated, ``cache_n`` = reused, ``prompt_ms``, ``predicted_n``,
``predicted_ms``, per-token and per-second figures) and ``prompt``, the rendered FIM prompt
with its special tokens written out. Streaming sends ``data: {...}`` chunks with ``stop: false``,
then the full answer with ``stop: true`` (no ``[DONE]``, as llama.cpp's own endpoints).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, AsyncIterator, Callable

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from starchat_cli.engine.contract import Engine, Generation, StopReason
from starchat_cli.engine.params import GenerationParams, TopLogprobs, capped

from .body import read_json
from .bridge import Bridge, Piece, Start
from .config import ServerConfig
from .errors import APIError
from .line_limits import limit_lines
from .logprobs import native_probabilities
from .requests import (
    ARRAY,
    BOOLEAN,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    _number,
    check_fields,
    check_type,
    sampling_params,
)
from .sampling import (
    PENALTIES,
    TRUNCATION,
    UNSUPPORTED_SAMPLERS,
    extras,
    native_logit_bias,
    resolve_text_bias,
)
from .sse import first_item, live

# The engine's stop reasons as llama.cpp's stop types.
STOP_TYPES = {
    StopReason.STOP: "eos",
    StopReason.LENGTH: "limit",
    StopReason.CONTEXT: "limit",
    StopReason.CANCELLED: "none",
}

# The fields of the module's docstring with their JSON types, checked as the OpenAI routes
# check theirs (requests.py): ``"stream": "false"`` is a 400 naming ``stream``, null is "not given".
FIELD_TYPES: dict[str, tuple[str, ...]] = {
    "input_prefix": (STRING,),
    "input_suffix": (STRING,),
    "input_extra": (ARRAY,),
    "prompt": (STRING,),
    "n_predict": (INTEGER,),
    "temperature": (NUMBER,),
    "top_p": (NUMBER,),
    "top_k": (INTEGER,),
    "min_p": (NUMBER,),
    "stop": (STRING, ARRAY),
    "seed": (INTEGER,),
    "t_max_predict_ms": (NUMBER,),
    "n_indent": (INTEGER,),
    "cache_prompt": (BOOLEAN,),
    "stream": (BOOLEAN,),
    "response_fields": (ARRAY,),
    "grammar": (STRING,),
    "json_schema": (OBJECT,),
    "repeat_penalty": (NUMBER,),
    "presence_penalty": (NUMBER,),
    "frequency_penalty": (NUMBER,),
    "n_probs": (INTEGER,),
    "post_sampling_probs": (BOOLEAN,),
    "logit_bias": (ARRAY, OBJECT),
}
EXTRA_TYPES: dict[str, tuple[str, ...]] = {"filename": (STRING,), "text": (STRING,)}  # input_extra[i]
# llama.cpp's own fields (the sampling ones are engine/params.py's, through sampling_params).
NPredict = Annotated[int, Field(ge=-1)]  # -1: up to the server's limit
NIndent = Annotated[int, Field(ge=0, le=1 << 16)]
TMaxPredictMs = Annotated[float, Field(ge=0, le=1e9)]


@dataclass(frozen=True)
class InfillRequest:
    prefix: str
    suffix: str
    params: GenerationParams
    extra: tuple[tuple[str, str], ...] = ()
    n_indent: int = 0
    t_max_predict_ms: float = 0.0
    stream: bool = False
    response_fields: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    prompt_text: str | None = None  # /completion: the prompt as given (else the engine's FIM prompt)
    n_probs: int = 0  # > 0: completion_probabilities in the answer (params.logprobs records them)
    bias_texts: tuple[tuple[str, float], ...] = ()  # logit_bias by text: tokenized when it starts


def _extra(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for i, chunk in enumerate(data.get("input_extra") or ()):
        check_type(chunk, (OBJECT,), f"input_extra[{i}]", "input_extra")
        if not isinstance(chunk, dict):  # null
            raise APIError(400, f"input_extra[{i}] must be a {{filename, text}} object", param="input_extra")
        for key, allowed in EXTRA_TYPES.items():
            check_type(chunk.get(key), allowed, f"input_extra[{i}].{key}", "input_extra")
        filename, text = chunk.get("filename"), chunk.get("text")
        if text is None:  # as llama.cpp's server: a chunk is its text
            raise APIError(
                400,
                f"input_extra[{i}].text is required: each chunk is {{filename, text}}",
                param="input_extra",
            )
        out.append(("tmp" if filename is None else filename, text))
    return tuple(out)


def parse_infill(data: dict[str, Any], config: ServerConfig) -> InfillRequest:
    """Check an /infill body: types first (:data:`FIELD_TYPES`), then values; every bad value
    is a 400 naming its field."""
    check_fields(data, FIELD_TYPES)
    prefix = (data.get("input_prefix") or "") + (data.get("prompt") or "")
    suffix = data.get("input_suffix") or ""
    extra = _extra(data)
    return InfillRequest(prefix=prefix, suffix=suffix, extra=extra, **native_fields(data, config, "/infill"))


def native_fields(data: dict[str, Any], config: ServerConfig, route: str) -> dict[str, Any]:
    """What llama.cpp's native routes (``/infill``, ``/completion``) share: sampling, the two line
    limits, ``stream``, ``response_fields`` and the ``generation_settings`` echoed back."""
    n_predict = _number(data, "n_predict", None, capped(NPredict, config.max_tokens_limit))
    mapped = {key: data.get(key) for key in ("temperature", "top_p", "seed", "stop")}
    mapped["max_tokens"] = None if n_predict is None or n_predict < 0 else max(1, n_predict)
    params = sampling_params(mapped, config)
    if data.get("return_tokens"):
        raise APIError(
            400,
            f"'return_tokens' is not supported on {route}: send 'prompt' as token ids, or ask /tokenize",
            param="return_tokens",
        )
    for name, why in (
        ("ignore_eos", "a reply ends at the model's end of text; cap it with n_predict"),
        ("lora", "starchat loads no LoRA adapters"),
    ):
        if data.get(name) not in (None, False, []):
            raise APIError(400, f"'{name}' is not supported on {route}: {why}", param=name)
    if data.get("post_sampling_probs"):
        raise APIError(
            400,
            "'post_sampling_probs' is not supported: n_probs reports the model's own log-probabilities "
            "(before temperature and truncation); leave it out",
            param="post_sampling_probs",
        )
    n_probs = _number(data, "n_probs", 0, TopLogprobs)
    if n_probs:
        params = params.model_copy(update={"logprobs": n_probs})
    steering = {
        key: data.get(key)
        for key in ("grammar", "json_schema", *PENALTIES, *TRUNCATION, *UNSUPPORTED_SAMPLERS, "repeat_last_n")
    }
    params = params.model_copy(update=extras(steering, chat=False))
    bias = native_logit_bias(data.get("logit_bias"))
    by_id = tuple((t, b) for t, b in bias if isinstance(t, int))
    if by_id:
        params = params.model_copy(update={"logit_bias": by_id})
    n_indent = _number(data, "n_indent", 0, NIndent)
    t_max = _number(data, "t_max_predict_ms", 0.0, TMaxPredictMs)
    fields = data.get("response_fields") or ()
    if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
        raise APIError(400, "'response_fields' must be a list of strings", param="response_fields")
    settings = {
        "n_predict": params.max_tokens if params.max_tokens is not None else -1,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "seed": params.seed if params.seed is not None else 4294967295,
        "stop": list(params.stop),
        "n_indent": n_indent,
        "t_max_predict_ms": t_max,
    }
    if n_probs:
        settings["n_probs"] = n_probs
    return {
        "params": params,
        "n_probs": n_probs,
        "bias_texts": tuple((t, b) for t, b in bias if isinstance(t, str)),
        "n_indent": n_indent,
        "t_max_predict_ms": t_max,
        "stream": data.get("stream") is True,
        "response_fields": tuple(fields),
        "settings": settings,
    }


def _timings(gen: Generation) -> dict[str, Any]:
    st = gen.stats
    evaluated = max(0, st.prompt_tokens - st.cached_tokens)
    prompt_ms = st.prompt_seconds * 1000
    predicted_ms = st.decode_seconds * 1000
    n = st.generated_tokens
    return {
        "cache_n": st.cached_tokens,
        "prompt_n": evaluated,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / evaluated, 3) if evaluated else 0.0,
        "prompt_per_second": round(evaluated / st.prompt_seconds, 2) if st.prompt_seconds > 0 else 0.0,
        "predicted_n": n,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / n, 3) if n else 0.0,
        "predicted_per_second": round(st.tokens_per_second, 2),
    }


def infill_body(req: InfillRequest, text: str, gen: Generation, model: str) -> dict[str, Any]:
    """The whole answer (also the last chunk of a stream, with ``content`` "" there)."""
    st = gen.stats
    body = {
        "index": 0,
        "content": text,
        "tokens": [],
        "id_slot": 0,
        "stop": True,
        "model": model,
        "tokens_predicted": st.generated_tokens,
        "tokens_evaluated": st.prompt_tokens,
        # llama.cpp's meaning: the tokens in the context at the end (prompt and reply fed back),
        # not the prompt tokens reused (that is timings.cache_n)
        "tokens_cached": st.context_tokens or st.prompt_tokens + st.generated_tokens,
        "generation_settings": req.settings,
        "prompt": gen.prompt_text if req.prompt_text is None else req.prompt_text,
        "has_new_line": "\n" in text,
        "truncated": st.truncated_chars > 0,
        "stop_type": STOP_TYPES.get(st.stop_reason, "none"),
        "stopping_word": "",
        "timings": _timings(gen),
    }
    if req.n_probs and not req.stream:
        body["completion_probabilities"] = native_probabilities(gen.logprobs)
    return _select(body, req.response_fields)


def _select(body: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """Only ``fields`` (``a/b`` for nested values, kept as flat keys), as llama.cpp answers."""
    if not fields:
        return body
    out: dict[str, Any] = {}
    for path in fields:
        value: Any = body
        for part in path.split("/"):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            out[path] = value
    return out


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def text_tokens(engine: Engine) -> Callable[[str], list[int] | None]:
    """A text's tokens as llama.cpp biases them: no BOS, special-token text read as text."""
    return lambda text: engine.tokenize(text, add_special=False, parse_special=False)


class InfillEndpoint:
    """The /infill handler of one app (one engine, its config, its bridge); :mod:`.native` serves
    ``/completion`` through the same answer."""

    def __init__(self, engine: Engine, config: ServerConfig, bridge: Bridge) -> None:
        self.engine, self.config, self.bridge = engine, config, bridge
        self._tokens = text_tokens(engine)

    def _start(self, req: InfillRequest) -> Generation:
        params = resolve_text_bias(req.params, req.bias_texts, self._tokens)
        gen = self.engine.infill(req.prefix, req.suffix, params, extra=req.extra)
        return limit_lines(gen, req.n_indent, req.t_max_predict_ms)

    async def handle(self, request: Request) -> Response:
        req = parse_infill(await read_json(request, self.config.max_body_bytes), self.config)
        return await native_answer(self.bridge, req, lambda: self._start(req), self.config.model_name)


async def native_answer(bridge: Bridge, req: InfillRequest, start: Start, model: str) -> Response:
    """llama.cpp's native answer to ``req``: one JSON body, or ``data:`` chunks then the body."""
    if not req.stream:
        text, gen = await bridge.run_blocking(start)
        return JSONResponse(infill_body(req, text, gen, model))
    items, cancel = bridge.stream_chunks(start, logprobs=req.n_probs > 0)
    first = await first_item(items)  # an engine error here is an HTTP error, not a broken stream

    async def events(first: Any, items: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        gen, pending = None, [first]
        try:
            while True:
                item = pending.pop() if pending else await items.__anext__()
                if item is None:
                    break
                if isinstance(item, str):
                    yield _event({"index": 0, "content": item, "tokens": [], "stop": False, "id_slot": 0})
                elif isinstance(item, Piece):  # with n_probs: the chunk's tokens and their alternatives
                    chunk = {"index": 0, "content": item.text, "tokens": [], "stop": False, "id_slot": 0}
                    yield _event({**chunk, "completion_probabilities": native_probabilities(item.logprobs)})
                else:
                    gen = item
        except StopAsyncIteration:
            pass
        finally:
            cancel.set()
        if gen is not None:
            yield _event(infill_body(req, "", gen, model))

    return live(events(first, items))


__all__ = [
    "InfillEndpoint",
    "InfillRequest",
    "infill_body",
    "native_answer",
    "native_fields",
    "parse_infill",
    "text_tokens",
]
