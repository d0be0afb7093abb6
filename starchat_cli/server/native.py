"""``POST /completion``: llama.cpp's native text completion (Continue's llama.cpp provider and
llama.cpp's own clients call it), answered in the shape of :mod:`.infill`'s answers.

``prompt`` is a string, a list of token ids, ``{"prompt_string": ...}`` (llama.cpp's multimodal
form, text only here), or a list of those: one answer each, as a JSON list (a stream takes one
prompt). A flat list of ids and strings (``[1, 2, "text", 3]``) is one prompt, as in llama.cpp:
each string's tokens (special tokens read as such, no BOS) spliced in at its place.

The other fields are /infill's (:func:`~.infill.native_fields`): ``n_predict``, ``temperature``,
``top_p``, ``top_k``, ``min_p``, ``seed``, ``stop``, the penalties, ``grammar`` or
``json_schema``, ``n_indent``, ``t_max_predict_ms``, ``stream``, ``response_fields``,
``n_probs`` (``completion_probabilities``) and ``logit_bias``; ``cache_prompt`` is always on.
``return_tokens`` is a 400 pointing at ``/tokenize``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from starchat_cli.engine.contract import Engine, Generation

from .body import read_json
from .bridge import Bridge
from .config import ServerConfig
from .errors import APIError
from .infill import FIELD_TYPES as INFILL_TYPES
from .infill import InfillRequest, infill_body, native_answer, native_fields, text_tokens
from .jsontypes import ARRAY, BOOLEAN, OBJECT, STRING
from .line_limits import limit_lines
from .messages import completion_prompts
from .requests import check_fields
from .sampling import resolve_text_bias

FIELD_TYPES: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in INFILL_TYPES.items() if not k.startswith("input_")},
    "prompt": (STRING, ARRAY, OBJECT),
    "return_tokens": (BOOLEAN,),
}


Prompt = str | tuple[int, ...] | tuple[int | str, ...]  # text, token ids, or ids and texts mixed


def _mixed(raw: Any) -> bool:
    """A flat list of token ids and strings, at least one of each: llama.cpp's one mixed prompt."""
    if not isinstance(raw, list):
        return False
    ids = [p for p in raw if isinstance(p, int) and not isinstance(p, bool)]
    texts = [p for p in raw if isinstance(p, str)]
    return bool(ids) and bool(texts) and len(ids) + len(texts) == len(raw) and min(ids) >= 0


def _prompts(data: dict[str, Any]) -> tuple[Prompt, ...]:
    """The prompts, with llama.cpp's ``{"prompt_string": ...}`` objects read as their text."""
    raw = data.get("prompt")
    if raw is None:
        raise APIError(400, "'prompt' is required", param="prompt")
    if _mixed(raw):
        return (tuple(raw),)
    if isinstance(raw, dict):
        raw = _prompt_string(raw)
    elif isinstance(raw, list) and any(isinstance(p, dict) for p in raw):
        raw = [_prompt_string(p) if isinstance(p, dict) else p for p in raw]
    return completion_prompts({"prompt": raw})  # at most MAX_PROMPTS


def _prompt_string(item: dict[str, Any]) -> str:
    """llama.cpp's ``{"prompt_string": ..., "multimodal_data": [...]}``: its text (no images here)."""
    if item.get("multimodal_data"):
        raise APIError(
            400, "'multimodal_data' is not supported: starchat's models read text only", param="prompt"
        )
    text = item.get("prompt_string")
    if not isinstance(text, str):
        raise APIError(400, "'prompt_string' must be a string", param="prompt")
    return text


class CompletionEndpoint:
    """The native /completion handler of one app."""

    def __init__(self, engine: Engine, config: ServerConfig, bridge: Bridge) -> None:
        self.engine, self.config, self.bridge = engine, config, bridge

    def _start(self, req: InfillRequest, prompt: Prompt) -> Generation:
        params = resolve_text_bias(req.params, req.bias_texts, text_tokens(self.engine))
        gen = self.engine.complete(self._ids(prompt) if isinstance(prompt, tuple) else prompt, params)
        return limit_lines(gen, req.n_indent, req.t_max_predict_ms)

    def _ids(self, prompt: tuple[int | str, ...]) -> tuple[int, ...]:
        """Token ids, each string of a mixed prompt tokenized in its place."""
        ids: list[int] = []
        for part in prompt:
            if isinstance(part, int):
                ids.append(part)
                continue
            tokens = self.engine.tokenize(part, add_special=False, parse_special=True)
            if tokens is None:
                raise APIError(
                    400, "a prompt mixing ids and text needs a local model's tokenizer", param="prompt"
                )
            ids.extend(tokens)
        return tuple(ids)

    async def handle(self, request: Request) -> Response:
        data = await read_json(request, self.config.max_body_bytes)
        check_fields(data, FIELD_TYPES)
        prompts = _prompts(data)
        base = InfillRequest(prefix="", suffix="", **native_fields(data, self.config, "/completion"))
        model = self.config.model_name
        reqs = [dataclasses.replace(base, prompt_text=p if isinstance(p, str) else "") for p in prompts]
        if len(prompts) == 1:
            req, prompt = reqs[0], prompts[0]
            return await native_answer(self.bridge, req, functools.partial(self._start, req, prompt), model)
        if base.stream:
            raise APIError(
                400, "a streamed /completion takes one prompt: send the others apart", param="prompt"
            )
        bodies = []
        for i, (req, prompt) in enumerate(zip(reqs, prompts)):
            text, gen = await self.bridge.run_blocking(functools.partial(self._start, req, prompt))
            bodies.append({**infill_body(req, text, gen, model), "index": i})
        return JSONResponse(bodies)


__all__ = ["CompletionEndpoint", "FIELD_TYPES"]
