"""The endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (also as
``/chat/completions``, as llama-server has it), ``POST /v1/completions`` (with ``suffix``:
fill-in-the-middle), ``POST /infill`` (llama.cpp's, in :mod:`.infill`). The rest (``/tokenize``,
``/props``, ``/v1/models/{id}``, the refusals) is in :mod:`.extras`.

Every route but ``/health`` needs the API key (:func:`~.auth.key_required`). A completion
request is read and checked (:mod:`.requests`), generated through the :class:`~.bridge.Bridge`,
and answered as JSON or server-sent events (:mod:`.sse`); an :class:`~.errors.APIError` or an
engine error on the way is the response, from the app's exception handlers (:mod:`.errors`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from starchat_cli.engine.contract import Engine, Generation

from .auth import key_required
from .body import read_json
from .bridge import Bridge
from .config import ServerConfig
from .infill import InfillEndpoint
from .requests import CompletionRequest, Kind, parse_completion
from .sse import ReplyHead, completion_body, first_item, sse_response


class Endpoints:
    """The route handlers of one app: one engine, its config, its bridge."""

    def __init__(self, engine: Engine, config: ServerConfig, bridge: Bridge) -> None:
        self.engine, self.config, self.bridge = engine, config, bridge

    def routes(self) -> list[Route]:
        keyed = key_required(self.config.api_key)
        infill = InfillEndpoint(self.engine, self.config, self.bridge).handle
        return [
            Route("/health", self.health, methods=["GET"]),  # public: a liveness probe
            Route("/v1/models", self.models, methods=["GET"], middleware=keyed),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"], middleware=keyed),
            # llama-server's alias: clients given a base URL without /v1 call it
            Route("/chat/completions", self.chat_completions, methods=["POST"], middleware=keyed),
            Route("/v1/completions", self.completions, methods=["POST"], middleware=keyed),
            Route("/infill", infill, methods=["POST"], middleware=keyed),
        ]

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": self.config.model_name,
                "loaded": self.engine.info.loaded,
                "generations": self.bridge.counts(),
            }
        )

    async def models(self, request: Request) -> Response:
        model = {"id": self.config.model_name, "object": "model", "created": self.config.created}
        return JSONResponse({"object": "list", "data": [{**model, "owned_by": "starchat"}]})

    async def chat_completions(self, request: Request) -> Response:
        return await self._completion(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._completion(request, "text")

    async def _completion(self, request: Request, kind: Kind) -> Response:
        req = parse_completion(await read_json(request, self.config.max_body_bytes), self.config, kind)
        head = ReplyHead.new(kind, self.config.model_name)
        if not req.stream:
            text, gen = await self.bridge.run_blocking(lambda: self._start(req))
            return JSONResponse(completion_body(head, text, gen))
        items, cancel = self.bridge.stream_chunks(lambda: self._start(req))
        first = await first_item(items)  # an engine error here is an HTTP error, not a broken stream
        return sse_response(head, first, items, req.include_usage, cancel)

    def _start(self, req: CompletionRequest) -> Generation:
        """Start the generation ``req`` asks for (in the worker thread)."""
        if req.kind == "chat":
            return self.engine.generate(list(req.turns), req.params, system=req.system)
        if req.suffix is not None:  # OpenAI's legacy FIM field: the prompt is the prefix
            return self.engine.infill(req.prompt, req.suffix, req.params)
        return self.engine.complete(req.prompt, req.params)


__all__ = ["Endpoints"]
