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

import functools
import threading
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from starchat_cli.core.errors import ContextOverflowError
from starchat_cli.engine.contract import Engine, Generation

from .auth import key_required
from .body import read_json
from .bridge import Bridge
from .config import ServerConfig
from .infill import InfillEndpoint
from .native import CompletionEndpoint
from .requests import CompletionRequest, Kind, parse_completion
from .sse import ReplyHead, Shape, completion_body, first_item, sse_response


class Endpoints:
    """The route handlers of one app: one engine, its config, its bridge."""

    def __init__(self, engine: Engine, config: ServerConfig, bridge: Bridge) -> None:
        self.engine, self.config, self.bridge = engine, config, bridge

    def routes(self) -> list[Route]:
        keyed = key_required(self.config.api_key)
        infill = InfillEndpoint(self.engine, self.config, self.bridge).handle
        native = CompletionEndpoint(self.engine, self.config, self.bridge).handle
        return [
            Route("/health", self.health, methods=["GET"]),  # public: a liveness probe
            Route("/v1/models", self.models, methods=["GET"], middleware=keyed),
            Route("/models", self.models, methods=["GET"], middleware=keyed),  # as llama-server
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"], middleware=keyed),
            # llama-server's alias: clients given a base URL without /v1 call it
            Route("/chat/completions", self.chat_completions, methods=["POST"], middleware=keyed),
            Route("/v1/completions", self.completions, methods=["POST"], middleware=keyed),
            Route("/infill", infill, methods=["POST"], middleware=keyed),
            Route("/completion", native, methods=["POST"], middleware=keyed),  # llama.cpp's native
            Route("/completions", native, methods=["POST"], middleware=keyed),
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
        head = ReplyHead.new(kind, self.config.model_name, self.engine.info)
        echoed = tuple(p for p in req.prompts if isinstance(p, str)) if req.echo else ()
        shape = Shape(logprobs=req.params.logprobs is not None, prefixes=echoed, n=req.n)
        count = max(1, len(req.prompts)) * req.n  # choice i: prompt i // n, its (i % n)-th sample
        if not req.stream:
            results = [
                await self.bridge.run_blocking(functools.partial(self._start, req, i)) for i in range(count)
            ]
            return JSONResponse(completion_body(head, results, shape))
        cancel = threading.Event()
        items = self._choices(req, count, cancel)
        first = await first_item(items)  # an engine error here is an HTTP error, not a broken stream
        return sse_response(head, first, items, req.include_usage, cancel, shape)

    async def _choices(
        self, req: CompletionRequest, count: int, cancel: threading.Event
    ) -> AsyncIterator[tuple[int, Any]]:
        """The ``count`` choices' streams one after another, as ``(index, item)``; ``cancel`` stops them."""
        for i in range(count):
            if cancel.is_set():
                return
            logprobs = req.params.logprobs is not None
            items, stop = self.bridge.stream_chunks(functools.partial(self._start, req, i), logprobs=logprobs)
            try:
                async for item in items:
                    yield i, item
            finally:
                stop.set()
                await items.aclose()  # type: ignore[attr-defined]

    def _start(self, req: CompletionRequest, index: int = 0) -> Generation:
        """Start the generation of choice ``index`` (in the worker thread): prompt ``index // n``
        (text completions), sampled with the request's seed plus ``index % n``, so a prompt's
        choices differ when sampled and repeat with the seed."""
        params = req.params
        sample = index % req.n
        if sample and params.seed is not None:
            params = params.model_copy(update={"seed": (params.seed + sample) % 2**32})
        if req.kind == "chat":
            gen = self.engine.generate(list(req.turns), params, system=req.system)
            if gen.fit.dropped_turns:  # an API client must know: no silent trimming on /v1
                gen.close()
                raise ContextOverflowError(
                    f"the messages do not fit in the context window ({self.engine.info.n_ctx} tokens, "
                    f"with room for the reply): the {gen.fit.dropped_turns} oldest turns would have "
                    "to go; send fewer or shorter messages, a smaller max_tokens, or serve with a larger --ctx"
                )
            return gen
        prompt = req.prompts[index // req.n]
        if req.suffix is not None and isinstance(prompt, str):  # OpenAI's legacy FIM field: the prefix
            return self.engine.infill(prompt, req.suffix, params)
        return self.engine.complete(prompt, params)


__all__ = ["Endpoints"]
