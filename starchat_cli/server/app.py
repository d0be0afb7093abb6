"""An OpenAI-compatible HTTP API over the starchat engine (Starlette; run by uvicorn).

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or
server-sent events), ``POST /v1/completions``. Requests queue on the one model (the
engine's lock); a client that disconnects mid-stream stops its generation. Errors use
OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from starchat_cli.core import defaults
from starchat_cli.core.errors import ContextOverflowError, InputError, StarchatError
from starchat_cli.engine.contract import Engine, Generation, GenerationParams
from starchat_cli.engine.prompts import Message


@dataclass
class ServerConfig:
    model_name: str
    aliases: tuple[str, ...] = ()  # other names a request may use for the model
    api_key: str | None = None
    max_body_bytes: int = defaults.SERVE_MAX_BODY
    max_tokens_limit: int = defaults.SERVE_MAX_TOKENS
    default_max_tokens: int | None = None
    default_temperature: float = defaults.TEMPERATURE
    default_top_p: float = defaults.TOP_P
    created: int = field(default_factory=lambda: int(time.time()))


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.code, self.param)


def error_response(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status
    )


FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def make_app(
    engine: Engine, config: ServerConfig, *, on_shutdown: Callable[[], None] | None = None
) -> Starlette:
    """Build the ASGI app for one engine (an app factory: nothing is built at import)."""
    shutting_down = threading.Event()
    names = {config.model_name, *config.aliases}
    counters = {"in_flight": 0, "completed": 0, "cancelled": 0}
    counters_lock = threading.Lock()

    def count(key: str, delta: int = 1) -> None:
        with counters_lock:
            counters[key] += delta

    def check_auth(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), config.api_key.encode()
        ):
            raise APIError(
                401,
                "invalid or missing API key: send 'Authorization: Bearer KEY'",
                "authentication_error",
                "invalid_api_key",
            )

    async def read_json(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise APIError(413, f"request body over {config.max_body_bytes} bytes", code="request_too_large")
        body = b""
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > config.max_body_bytes:
                    raise APIError(
                        413, f"request body over {config.max_body_bytes} bytes", code="request_too_large"
                    )
        except ClientDisconnect:
            raise APIError(400, "client disconnected") from None
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        return data

    def check_model(data: dict[str, Any]) -> None:
        model = data.get("model")
        if model is not None and model not in names:
            raise APIError(
                404,
                f"model {model!r} is not served here; this server has {config.model_name!r}",
                code="model_not_found",
                param="model",
            )

    def params_from(data: dict[str, Any]) -> GenerationParams:
        def number(key: str, default: Any, lo: float, hi: float, kind: type = float) -> Any:
            value = data.get(key)
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise APIError(400, f"'{key}' must be a number from {lo} to {hi}", param=key)
            if kind is int and int(value) != value:
                raise APIError(400, f"'{key}' must be a whole number", param=key)
            return kind(value)

        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        data = {**data, "max_tokens": max_tokens}
        stop = data.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop) or len(stop) > 8:
            raise APIError(400, "'stop' must be a string or a list of up to 8 strings", param="stop")
        return GenerationParams(
            max_tokens=number(
                "max_tokens",
                config.default_max_tokens or config.max_tokens_limit,
                1,
                config.max_tokens_limit,
                int,
            ),
            temperature=number("temperature", config.default_temperature, 0.0, 5.0),
            top_p=number("top_p", config.default_top_p, 0.0, 1.0),
            seed=number("seed", None, 0, 2**32 - 1, int),
            stop=tuple(stop),
        )

    def chat_turns(data: dict[str, Any]) -> tuple[list[Message], str | None]:
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", param="messages")
        system: str | None = None
        turns: list[Message] = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise APIError(400, f"messages[{i}] must be an object", param="messages")
            role, content = msg.get("role"), msg.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                content = "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
            if not isinstance(content, str):
                raise APIError(400, f"messages[{i}].content must be a string", param="messages")
            if role in ("system", "developer"):
                if turns:
                    raise APIError(400, "system messages must come first", param="messages")
                system = content if system is None else f"{system}\n\n{content}"
            elif role in ("user", "assistant"):
                if turns and turns[-1].role == role:  # merge consecutive turns of one role
                    turns[-1] = Message(role, f"{turns[-1].content}\n\n{content}")
                else:
                    turns.append(Message(role, content))
            else:
                raise APIError(
                    400,
                    f"messages[{i}].role {role!r} is not supported (system, user, assistant)",
                    param="messages",
                )
        if not turns or turns[0].role != "user" or turns[-1].role != "user":
            raise APIError(400, "the conversation must start and end with a user message", param="messages")
        return turns, system

    async def run_blocking(start: Callable[[], Generation]) -> tuple[str, Generation]:
        """Generate a whole reply in a worker thread (queued on the engine's lock)."""

        def work() -> tuple[str, Generation]:
            count("in_flight")
            try:
                gen = start()
                try:
                    parts = []
                    for chunk in gen:
                        parts.append(chunk)
                        if shutting_down.is_set():
                            break
                    return "".join(parts), gen
                finally:
                    gen.close()
                    count("cancelled" if gen.stats.stop_reason == "cancelled" else "completed")
            finally:
                count("in_flight", -1)

        return await asyncio.to_thread(work)

    def stream_chunks(
        start: Callable[[], Generation],
    ) -> tuple[AsyncIterator[str | Generation], threading.Event]:
        """Run a generation in a thread and hand its chunks to the event loop as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        _END = object()

        def work() -> None:
            gen = None
            count("in_flight")
            try:
                gen = start()
                for chunk in gen:
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                    if cancel.is_set() or shutting_down.is_set():
                        break
                gen.close()
                loop.call_soon_threadsafe(queue.put_nowait, gen)
            except BaseException as exc:  # handed to the event loop, raised there
                if gen is not None:
                    gen.close()
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                if gen is not None:
                    count("cancelled" if gen.stats.stop_reason == "cancelled" else "completed")
                count("in_flight", -1)
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        threading.Thread(target=work, name="starchat-generate", daemon=True).start()

        async def items() -> AsyncIterator[str | Generation]:
            try:
                while True:
                    item = await queue.get()
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancel.set()  # the client went away, or we are done: stop generating

        return items(), cancel

    def usage(gen: Generation) -> dict[str, int]:
        st = gen.stats
        return {
            "prompt_tokens": st.prompt_tokens,
            "completion_tokens": st.generated_tokens,
            "total_tokens": st.prompt_tokens + st.generated_tokens,
        }

    def engine_error(exc: StarchatError) -> APIError:
        if isinstance(exc, ContextOverflowError):
            return APIError(400, exc.message, code="context_length_exceeded")
        if isinstance(exc, InputError):
            return APIError(400, exc.message)
        return APIError(500, exc.message, "server_error")

    async def handle(request: Request, kind: str) -> Response:
        try:
            check_auth(request)
            data = await read_json(request)
            check_model(data)
            params = params_from(data)
            if kind == "chat":
                turns, system = chat_turns(data)
                start = lambda: engine.generate(turns, params, system=system)  # noqa: E731
            else:
                prompt = data.get("prompt")
                if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                    prompt = prompt[0]
                if not isinstance(prompt, str):
                    raise APIError(400, "'prompt' must be a string", param="prompt")
                start = lambda: engine.complete(prompt, params)  # noqa: E731
            stream = bool(data.get("stream"))
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
            created = int(time.time())
            if not stream:
                try:
                    text, gen = await run_blocking(start)
                except StarchatError as exc:
                    raise engine_error(exc) from None
                finish = FINISH.get(gen.stats.stop_reason, "stop")
                if kind == "chat":
                    choice = {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                    obj = "chat.completion"
                else:
                    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
                    obj = "text_completion"
                return JSONResponse(
                    {
                        "id": ident,
                        "object": obj,
                        "created": created,
                        "model": config.model_name,
                        "choices": [choice],
                        "usage": usage(gen),
                    }
                )
            items, cancel = stream_chunks(start)
            first = await _first_item(items)
            if isinstance(first, StarchatError):
                cancel.set()
                raise engine_error(first)
            return StreamingResponse(
                _sse(kind, ident, created, config.model_name, first, items, include_usage, usage, cancel),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        except APIError as exc:
            return exc.response()

    async def chat_completions(request: Request) -> Response:
        return await handle(request, "chat")

    async def completions(request: Request) -> Response:
        return await handle(request, "text")

    async def models(request: Request) -> Response:
        try:
            check_auth(request)
        except APIError as exc:
            return exc.response()
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": config.model_name,
                        "object": "model",
                        "created": config.created,
                        "owned_by": "starchat",
                    }
                ],
            }
        )

    async def health(request: Request) -> Response:
        with counters_lock:
            generations = dict(counters)
        return JSONResponse(
            {
                "status": "ok",
                "model": config.model_name,
                "loaded": engine.info.loaded,
                "generations": generations,
            }
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(
            404, f"no route {request.method} {request.url.path}", "invalid_request_error", "not_found"
        )

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(
            405,
            f"{request.method} is not allowed on {request.url.path}",
            "invalid_request_error",
            "method_not_allowed",
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        shutting_down.set()  # in-flight streams end at their next token
        if on_shutdown is not None:
            on_shutdown()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
        lifespan=lifespan,
    )
    # The server sets this on Ctrl-C, before it waits for open connections: in-flight
    # generations stop at their next token and their streams end properly.
    app.state.shutting_down = shutting_down
    return app


async def _first_item(items: AsyncIterator[Any]) -> Any:
    """The first chunk (or the end) of a stream, so engine errors become HTTP errors, not broken streams."""
    try:
        return await items.__anext__()
    except StopAsyncIteration:
        return None
    except StarchatError as exc:
        return exc


async def _sse(
    kind, ident, created, model, first, items, include_usage, usage, cancel
) -> AsyncIterator[bytes]:
    def event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(text: str | None, finish: str | None, role: bool = False) -> bytes:
        if kind == "chat":
            delta: dict[str, Any] = (
                {"role": "assistant", "content": ""}
                if role
                else ({"content": text} if text is not None else {})
            )
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return event({"id": ident, "object": obj, "created": created, "model": model, "choices": [choice]})

    gen = None
    pending = [first]
    try:
        if kind == "chat":
            yield chunk(None, None, role=True)
        try:
            while True:
                item = pending.pop() if pending else await items.__anext__()
                if item is None:
                    break
                if isinstance(item, str):
                    yield chunk(item, None)
                else:  # the finished Generation
                    gen = item
        except StopAsyncIteration:
            pass
        finish = FINISH.get(gen.stats.stop_reason, "stop") if gen is not None else "stop"
        yield chunk(None, finish)
        if include_usage and gen is not None:
            yield event(
                {
                    "id": ident,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage(gen),
                }
            )
        yield b"data: [DONE]\n\n"
    finally:
        cancel.set()  # a client that went away stops its generation at the next token
