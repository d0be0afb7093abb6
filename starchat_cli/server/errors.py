"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

:class:`APIError` is raised anywhere a request is handled and becomes its response;
:func:`from_engine_error` maps the engine's errors to API errors; ``EXCEPTION_HANDLERS``
gives Starlette's own 404, 405 and 500 the same shape.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from starchat_cli.core.errors import ContextOverflowError, InputError, StarchatError


class APIError(Exception):
    """A request that fails with ``status``; ``response()`` is what the client gets."""

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
    """A JSON error body in OpenAI's shape, with ``status`` as the HTTP status."""
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status
    )


def from_engine_error(exc: StarchatError) -> APIError:
    """The API error for an engine failure: the client's fault is a 400, anything else a 500."""
    if isinstance(exc, ContextOverflowError):
        return APIError(400, exc.message, code="context_length_exceeded")
    if isinstance(exc, InputError):
        return APIError(400, exc.message)
    return APIError(500, exc.message, "server_error")


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


Handler = Callable[[Request, Exception], Awaitable[Response]]

EXCEPTION_HANDLERS: dict[Any, Handler] = {404: not_found, 405: method_not_allowed, 500: server_error}


__all__ = ["EXCEPTION_HANDLERS", "APIError", "error_response", "from_engine_error"]
