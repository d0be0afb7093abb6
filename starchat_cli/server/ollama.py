"""The subset of Ollama's API that editors use (Continue, Open WebUI, Copilot's Ollama provider, ...).

``GET|HEAD /`` ("Ollama is running", no key needed: editors probe it), ``GET /api/version``,
``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``, ``POST /api/generate`` and
``POST /api/chat``, with Ollama's field names. Replies stream as newline-delimited JSON
(``application/x-ndjson``) unless the request says ``"stream": false``; the last object
has ``done: true``, ``done_reason``, the token counts and nanosecond durations. Errors are
``{"error": "..."}`` (the exception handlers pick that shape for ``/api/``; a stream that
fails after it started says it in a line). The API key, the bridge (queue on the one model,
cancel on disconnect, persist after) and the model names are the OpenAI routes' own.

``/api/version`` says 0.6.4: GitHub Copilot's Ollama provider refuses anything older
(its error: "Please ensure you have Ollama version 0.6.4 or higher"), and claiming a
newer version would invite features starchat does not have (thinking, tool calls).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import Engine, Generation
from starchat_cli.engine.prompting.formats import Message

from .auth import key_required
from .body import read_json
from .bridge import Bridge, Piece
from .config import ServerConfig
from .errors import OllamaError
from .logprobs import token_entries
from .ollama_model import ServedModel, rfc3339
from .ollama_requests import ChatRequest, GenerateRequest, check_model, parse_chat, parse_generate
from .sse import finish_reason, first_item, live

OLLAMA_VERSION = "0.6.4"

_MANAGE = "starchat serve serves the one model it was started with and does not manage models"
# Ollama routes a client may call that serve does not implement: a 501 with the reason.
NOT_SERVED = {
    "/api/pull": "starchat serve does not download models: run `starchat pull MODEL` in a terminal, "
    "then start `starchat serve -m MODEL`",
    "/api/embed": "starchat serve does not compute embeddings: it serves a generative chat model "
    "(StarChat), whose hidden states make poor embeddings; use an embedding model",
    "/api/push": f"{_MANAGE}: nothing to push",
    "/api/create": f"{_MANAGE}: convert a checkpoint with `starchat convert` instead",
    "/api/copy": f"{_MANAGE}: nothing to copy",
    "/api/delete": f"{_MANAGE}: remove a model with `starchat models rm` instead",
    "/api/blobs": f"{_MANAGE}: no blobs",
}
NOT_SERVED["/api/embeddings"] = NOT_SERVED["/api/embed"]

Shape = Callable[[str], dict[str, Any]]  # text -> the reply's text field(s)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def final_fields(gen: Generation | None, started_ns: int) -> dict[str, Any]:
    """What the last object of a reply adds: ``done_reason``, counts and durations (ns)."""
    total = time.perf_counter_ns() - started_ns
    if gen is None:
        return {"done_reason": "stop", "total_duration": total}
    st = gen.stats
    return {
        "done_reason": finish_reason(gen),  # Ollama's names for stop reasons are OpenAI's
        "total_duration": total,
        "load_duration": _ns(st.load_seconds),
        "prompt_eval_count": st.prompt_tokens,
        "prompt_eval_duration": _ns(st.prompt_seconds),
        "eval_count": st.generated_tokens,
        "eval_duration": _ns(st.decode_seconds),
    }


class OllamaEndpoints:
    """The Ollama routes of one app: the engine, its config and bridge, the model's facts."""

    def __init__(self, engine: Engine, config: ServerConfig, bridge: Bridge) -> None:
        self.engine, self.config, self.bridge = engine, config, bridge
        self.model = ServedModel(engine, config)

    def routes(self) -> list[Route]:
        keyed = key_required(self.config.api_key)
        return [
            Route("/", self.root, methods=["GET", "HEAD"]),  # public: editors probe it
            Route("/api/version", self.version, methods=["GET", "HEAD"], middleware=keyed),
            Route("/api/tags", self.tags, methods=["GET", "HEAD"], middleware=keyed),
            Route("/api/ps", self.ps, methods=["GET"], middleware=keyed),
            Route("/api/show", self.show, methods=["POST"], middleware=keyed),
            Route("/api/generate", self.generate, methods=["POST"], middleware=keyed),
            Route("/api/chat", self.chat, methods=["POST"], middleware=keyed),
            # The rest of Ollama's API: a 501 naming the reason (pull, embed, create, ...: NOT_SERVED),
            # else a 404, in a shape an Ollama client can read.
            Route("/api/{rest:path}", self.unsupported, methods=["GET", "POST", "DELETE", "PUT"]),
        ]

    async def unsupported(self, request: Request) -> Response:
        path = request.url.path
        if any(route.path == path for route in self.routes()[:-1]):
            raise OllamaError(405, f"{request.method} is not allowed on {path}")
        reason = NOT_SERVED.get(path) or (
            NOT_SERVED["/api/blobs"] if path.startswith("/api/blobs/") else None
        )
        if reason is not None:
            raise OllamaError(501, reason)
        raise OllamaError(
            404, f"{path} is not part of starchat serve's Ollama API (see `starchat serve --help`)"
        )

    async def _facts(self) -> None:
        """Read the model's facts (the GGUF header, the vocabulary) once, off the event loop."""
        if not self.model.has_facts:
            try:
                await asyncio.to_thread(lambda: self.model.facts)
            except StarchatError as exc:  # the file changed under the server
                raise OllamaError(500, exc.message) from None

    async def _body(self, request: Request) -> dict[str, Any]:
        await self._facts()
        return await read_json(request, self.config.max_body_bytes)

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    async def tags(self, request: Request) -> Response:
        await self._facts()
        return JSONResponse(self.model.tags())

    async def ps(self, request: Request) -> Response:
        await self._facts()
        return JSONResponse(self.model.ps())

    async def show(self, request: Request) -> Response:
        check_model(await self._body(request), self.config, self.model.quant)
        return JSONResponse(self.model.show())

    async def generate(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        req = parse_generate(await self._body(request), self.config, self.model.quant)
        if req.suffix is not None and self.model.facts.fim is False:
            raise OllamaError(
                400,
                f"model '{req.model}' does not support insert: it has no fill-in-the-middle tokens "
                "(<fim_prefix>, <fim_suffix>, <fim_middle>); serve a StarCoder-family model "
                "such as starcoder2-3b for a request with 'suffix'",
            )
        return await self._reply(req, lambda text: {"response": text}, started)

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        req = parse_chat(await self._body(request), self.config, self.model.quant)
        return await self._reply(
            req, lambda text: {"message": {"role": "assistant", "content": text}}, started
        )

    def _start(self, req: GenerateRequest | ChatRequest) -> Callable[[], Generation]:
        """What the worker thread runs to start the generation ``req`` asks for."""
        engine = self.engine
        if isinstance(req, ChatRequest):
            return lambda: engine.generate(list(req.turns), req.params, system=req.system)
        if req.suffix is not None:
            suffix = req.suffix
            return lambda: engine.infill(req.prompt, suffix, req.params)
        if req.raw:
            return lambda: engine.complete(req.prompt, req.params)
        return lambda: engine.generate([Message("user", req.prompt)], req.params, system=req.system)

    def _head(self, req: GenerateRequest | ChatRequest) -> dict[str, Any]:
        return {"model": req.model, "created_at": rfc3339()}

    async def _reply(self, req: GenerateRequest | ChatRequest, shape: Shape, started: int) -> Response:
        if req.load_only:  # Ollama's way to preload a model: nothing to generate
            return JSONResponse({**self._head(req), **shape(""), "done": True, "done_reason": "load"})
        start = self._start(req)
        logprobs = req.params.logprobs is not None
        if not req.stream:
            text, gen = await self.bridge.run_blocking(start)
            body = {**self._head(req), **shape(text), "done": True, **final_fields(gen, started)}
            if logprobs:
                body["logprobs"] = token_entries(gen.logprobs)
            return JSONResponse(body)
        items, cancel = self.bridge.stream_chunks(start, logprobs=logprobs)
        first = await first_item(items)  # an engine error here is an HTTP error, not a broken stream
        return live(self._lines(req, shape, first, items, cancel, started), "application/x-ndjson")

    async def _lines(
        self,
        req: GenerateRequest | ChatRequest,
        shape: Shape,
        first: Any,
        items: AsyncIterator[Any],
        cancel: threading.Event,
        started: int,
    ) -> AsyncIterator[bytes]:
        """One JSON object per line: a chunk of text each, then the ``done: true`` summary."""

        def line(obj: dict[str, Any]) -> bytes:
            return (json.dumps(obj, ensure_ascii=False) + "\n").encode()

        gen: Generation | None = None
        pending = [first]
        try:
            while True:
                try:
                    item = pending.pop() if pending else await items.__anext__()
                except StopAsyncIteration:
                    break
                except StarchatError as exc:  # failed after the stream began: say so in-band
                    yield line({"error": exc.message})
                    return
                if item is None:
                    break
                if isinstance(item, Piece):  # logprobs asked for: each line carries its tokens'
                    extra = {"logprobs": token_entries(item.logprobs)} if item.logprobs else {}
                    if item.text or extra:
                        yield line({**self._head(req), **shape(item.text), "done": False, **extra})
                elif isinstance(item, str):
                    if item:
                        yield line({**self._head(req), **shape(item), "done": False})
                else:
                    gen = item
            yield line({**self._head(req), **shape(""), "done": True, **final_fields(gen, started)})
        finally:
            cancel.set()  # a client that went away stops its generation at the next token


__all__ = ["OLLAMA_VERSION", "OllamaEndpoints", "final_fields"]
