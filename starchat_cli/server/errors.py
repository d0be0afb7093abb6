"""Every failure of a request as the client's dialect says it, from exception handlers.

    raise APIError(400, "'n' must be 1", param="n")      # in any handler: the response is built here
    raise OllamaError(404, "model 'x' not found")         # the same, from the Ollama request checks
    app = Starlette(..., exception_handlers=EXCEPTION_HANDLERS)

A handler raises and never builds an error response itself. The dialect is the route's:
Ollama's ``{"error": "..."}`` under ``/api/`` (:func:`is_ollama_path`), OpenAI's
``{"error": {"message", "type", "param", "code"}}`` everywhere else. The engine's errors
(:class:`~starchat_cli.core.errors.StarchatError`) map to a status by
:func:`from_engine_error`; Starlette's own 404, 405 and 500 keep OpenAI's shape.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from starchat_cli.core.errors import ContextOverflowError, InputError, StarchatError


class APIError(Exception):
    """A request that fails with ``status``; the exception handler turns it into the response."""

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


class OllamaError(APIError):
    """A failed Ollama request: ``status`` and the message of ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)

    @classmethod
    def of(cls, exc: APIError) -> OllamaError:
        return cls(exc.status, exc.message)


def is_ollama_path(path: str) -> bool:
    """Whether ``path`` is one of the Ollama routes, whose errors are ``{"error": "..."}``."""
    return path == "/api" or path.startswith("/api/")


def error_payload(
    path: str, message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An error body in the dialect of the route at ``path``."""
    if is_ollama_path(path):
        return {"error": message}
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: APIError, path: str) -> JSONResponse:
    """The response for ``exc`` on the route at ``path``."""
    body = error_payload(path, exc.message, exc.type, exc.code, exc.param)
    return JSONResponse(body, status_code=exc.status)


def from_engine_error(exc: StarchatError) -> APIError:
    """The API error for an engine failure: the client's fault is a 400, anything else a 500."""
    if isinstance(exc, ContextOverflowError):
        return APIError(400, exc.message, code="context_length_exceeded")
    if isinstance(exc, InputError):
        return APIError(400, exc.message)
    return APIError(500, exc.message, "server_error")


async def api_error(request: Request, exc: APIError) -> Response:
    return error_response(exc, request.url.path)


async def engine_error(request: Request, exc: StarchatError) -> Response:
    return error_response(from_engine_error(exc), request.url.path)


def _openai(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return error_response(APIError(status, message, type_, code), "/")


async def not_found(request: Request, exc: Exception) -> Response:
    return _openai(404, f"no route {request.method} {request.url.path}", "invalid_request_error", "not_found")


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return _openai(
        405,
        f"{request.method} is not allowed on {request.url.path}",
        "invalid_request_error",
        "method_not_allowed",
    )


async def server_error(request: Request, exc: Exception) -> Response:
    return _openai(500, f"internal error: {type(exc).__name__}", "server_error")


Handler = Callable[[Request, Any], Awaitable[Response]]  # Any: each takes its own exception type

EXCEPTION_HANDLERS: dict[Any, Handler] = {
    APIError: api_error,
    StarchatError: engine_error,
    404: not_found,
    405: method_not_allowed,
    500: server_error,
}


__all__ = [
    "EXCEPTION_HANDLERS",
    "APIError",
    "OllamaError",
    "error_payload",
    "error_response",
    "from_engine_error",
    "is_ollama_path",
]
