"""The routes around the completions: llama.cpp's ``/tokenize``, ``/detokenize``, ``/props``,
OpenAI's ``GET /v1/models/{id}``, and clear refusals for what ``serve`` does not do.

    POST /tokenize    {"content": "def f():", "add_special": false, "with_pieces": true}
                      -> {"tokens": [{"id": 755, "piece": "def"}, ...]}   (a piece that is not whole
                         UTF-8 is its list of bytes, as in llama.cpp)
    POST /detokenize  {"tokens": [755, 282]} -> {"content": "def f"}
    GET  /props       llama.cpp's server properties: default_generation_settings, total_slots (1),
                      model_path, chat_template, modalities, build_info
    GET  /v1/models/{id}   the served model in OpenAI's model shape, for any id (the reply's ``id`` says
                      which model answers, as the completions do); a 404 under ``serve --strict-model``

Refused, in the dialect of the route's family (OpenAI's error object, ``{"error": "..."}`` under
``/api/``): embeddings (``/v1/embeddings``, llama.cpp's ``/embedding(s)``; Ollama's are in
:mod:`.ollama`) with a 501 saying why (a StarChat model is generative: its hidden states make poor
embeddings, so serving them would be dishonest), OpenAI's audio, images, moderations, files,
batches, fine-tuning, responses and assistants routes with a 501, llama.cpp's reranking with a 501,
and any other ``/v1/...`` path with a 404.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from starchat_cli import __version__
from starchat_cli.engine.contract import Engine

from .auth import key_required
from .body import read_json
from .bridge import Bridge
from .config import ServerConfig
from .errors import APIError
from .requests import ARRAY, BOOLEAN, STRING, check_fields

TOKENIZE_TYPES: dict[str, tuple[str, ...]] = {
    "content": (STRING,),
    "add_special": (BOOLEAN,),
    "parse_special": (BOOLEAN,),
    "with_pieces": (BOOLEAN,),
}
SERVED_V1 = ("/v1/models", "/v1/chat/completions", "/v1/completions")  # routes.py's
MAX_DETOKENIZE = 1 << 20  # ids in one /detokenize body (the body limit bounds it first)

EMBEDDINGS = (
    "starchat serve does not compute embeddings: it serves a generative chat model (StarChat), "
    "whose hidden states make poor embeddings; use an embedding model (for example "
    "llama-server --embeddings with a BERT-style GGUF)"
)
# OpenAI API families a client may call that serve does not implement: the reason for each.
OPENAI_NOT_SERVED = {
    "embeddings": EMBEDDINGS,
    "audio": "starchat serve has no audio routes: the model reads and writes text only",
    "images": "starchat serve has no image routes: the model reads and writes text only",
    "moderations": "starchat serve has no moderation model",
    "files": "starchat serve keeps no files: send the text in the request",
    "batches": "starchat serve runs requests one at a time as they come: no batch API",
    "fine_tuning": "starchat serve does not train models",
    "responses": "starchat serve implements /v1/chat/completions, not the Responses API",
    "assistants": "starchat serve keeps no assistants or threads: use /v1/chat/completions",
    "threads": "starchat serve keeps no assistants or threads: use /v1/chat/completions",
    "vector_stores": "starchat serve has no vector stores",
    "realtime": "starchat serve has no realtime API",
}
LLAMACPP_NOT_SERVED = {
    "/embedding": EMBEDDINGS,
    "/embeddings": EMBEDDINGS,
    "/rerank": "starchat serve has no reranking model",
    "/reranking": "starchat serve has no reranking model",
    "/v1/rerank": "starchat serve has no reranking model",
}


def not_served(message: str) -> APIError:
    return APIError(501, message, "not_supported_error", code="not_implemented")


def piece_json(piece: bytes) -> str | list[int]:
    """A token's piece as llama.cpp writes it: the text when it is whole UTF-8, else its bytes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


class ExtraEndpoints:
    """The routes above, for one engine, config and bridge (``/props`` reports the bridge's load)."""

    def __init__(self, engine: Engine, config: ServerConfig, bridge: Bridge) -> None:
        self.engine, self.config, self.bridge = engine, config, bridge
        self._template: str | None = None

    def routes(self) -> list[Route]:
        keyed = key_required(self.config.api_key)
        refuse = [Route(path, self.refuse, methods=["GET", "POST"]) for path in LLAMACPP_NOT_SERVED]
        return [
            Route("/v1/models/{model:path}", self.model, methods=["GET"], middleware=keyed),
            Route("/tokenize", self.tokenize, methods=["POST"], middleware=keyed),
            Route("/detokenize", self.detokenize, methods=["POST"], middleware=keyed),
            Route("/props", self.props, methods=["GET"], middleware=keyed),
            *refuse,
            Route("/v1/{rest:path}", self.v1_other, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]

    async def model(self, request: Request) -> Response:
        self.config.names.resolve(request.path_params["model"])  # any id, unless --strict-model
        c = self.config
        return JSONResponse(
            {"id": c.model_name, "object": "model", "created": c.created, "owned_by": "starchat"}
        )

    async def tokenize(self, request: Request) -> Response:
        data = await read_json(request, self.config.max_body_bytes)
        check_fields(data, TOKENIZE_TYPES)
        content = data.get("content")
        if content is None:
            raise APIError(400, "'content' is required: the text to tokenize", param="content")
        add_special = data.get("add_special") is True  # llama.cpp's defaults: false, true, false
        parse_special = data.get("parse_special") is not False
        tokens = await asyncio.to_thread(
            lambda: self.engine.tokenize(content, add_special=add_special, parse_special=parse_special)
        )
        if tokens is None:
            raise not_served("this engine cannot tokenize (a remote server's tokenizer is out of reach)")
        if data.get("with_pieces") is not True:
            return JSONResponse({"tokens": tokens})
        pieces = await self._pieces(tokens)
        return JSONResponse({"tokens": [{"id": t, "piece": piece_json(p)} for t, p in zip(tokens, pieces)]})

    async def detokenize(self, request: Request) -> Response:
        data = await read_json(request, self.config.max_body_bytes)
        check_fields(data, {"tokens": (ARRAY,)})
        tokens = data.get("tokens") or []
        if len(tokens) > MAX_DETOKENIZE or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            raise APIError(400, "'tokens' must be a list of token ids (integers)", param="tokens")
        pieces = await self._pieces(tokens)
        return JSONResponse({"content": b"".join(pieces).decode("utf-8", "replace")})

    async def _pieces(self, tokens: list[int]) -> list[bytes]:
        pieces = await asyncio.to_thread(lambda: self.engine.token_pieces(tokens))
        if pieces is None:
            raise not_served("this engine cannot detokenize (a remote server's tokenizer is out of reach)")
        return pieces

    async def props(self, request: Request) -> Response:
        info, c = self.engine.info, self.config
        if self._template is None:
            self._template = await asyncio.to_thread(self._chat_template)
        params = {
            "n_predict": c.default_max_tokens or -1,
            "max_tokens": c.default_max_tokens or -1,
            "temperature": c.default_temperature,
            "top_p": c.default_top_p,
            "seed": 4294967295 if c.default_seed is None else c.default_seed,  # llama.cpp's "random"
            "stop": [],
            "stream": False,
            "n_probs": 0,
            "grammar": "",
            "samplers": ["top_p", "temperature"],
        }
        settings = {
            "id": 0,
            "id_task": -1,
            "n_ctx": info.n_ctx,
            "speculative": c.draft != "off",
            "is_processing": self.bridge.counts()["in_flight"] > 0,
            "params": params,
            "prompt": "",
        }
        return JSONResponse(
            {
                "default_generation_settings": settings,
                "total_slots": 1,  # one model, one generation at a time (requests queue)
                "model_path": info.location,
                "model_alias": c.model_name,
                "chat_template": self._template,
                "prompt_format": info.prompt_format,  # what starchat renders prompts with
                "modalities": {"vision": False, "audio": False},
                "build_info": f"starchat {__version__}",
                "is_sleeping": False,
            }
        )

    def _chat_template(self) -> str:
        """The model file's own chat template ("" when it has none, or there is no file)."""
        from pathlib import Path

        from starchat_cli.core.errors import StarchatError
        from starchat_cli.models.gguf_info import read_gguf_info

        path = Path(self.engine.info.location)
        try:
            return (read_gguf_info(path).chat_template or "") if path.is_file() else ""
        except StarchatError:
            return ""

    async def refuse(self, request: Request) -> Response:
        raise not_served(LLAMACPP_NOT_SERVED[request.url.path])

    async def v1_other(self, request: Request) -> Response:
        if request.url.path in SERVED_V1:  # a served route, another method
            raise APIError(
                405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"
            )
        family = request.path_params["rest"].split("/", 1)[0]
        if family in OPENAI_NOT_SERVED:
            raise not_served(OPENAI_NOT_SERVED[family])
        raise APIError(
            404,
            f"no route {request.method} {request.url.path}: starchat serve's OpenAI API is /v1/models, "
            "/v1/chat/completions and /v1/completions",
            code="not_found",
        )


__all__ = ["ExtraEndpoints", "piece_json"]
