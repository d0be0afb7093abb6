"""The API key check: ``Authorization: Bearer KEY``, compared in constant time, as route middleware.

    keyed = key_required(config.api_key)
    Route("/v1/models", endpoint, methods=["GET"], middleware=keyed)   # a 401 without the key

A route declares whether it needs the key where it is listed (routes.py, ollama.py); the
public ones are ``/health``, Ollama's ``/`` probe and its "not supported" answers. The check
runs after routing (an unknown path is a 404, a wrong method a 405, key or not) and before
the handler reads anything. With no key configured everything passes (the server then
listens on loopback only, see cli/serve.py).
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import APIError


def bearer_matches(header: str, api_key: str) -> bool:
    """Whether an Authorization header value carries ``api_key`` in the Bearer scheme."""
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


class RequireKey:
    """ASGI middleware around one route: an :class:`APIError` 401 unless the request carries the key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not bearer_matches(Headers(scope=scope).get("authorization", ""), self.api_key):
            raise APIError(
                401,
                "invalid or missing API key: send 'Authorization: Bearer KEY'",
                "authentication_error",
                "invalid_api_key",
            )
        await self.app(scope, receive, send)


def key_required(api_key: str | None) -> list[Middleware]:
    """The ``middleware=`` of a route that needs the key (none when no key is configured)."""
    return [] if api_key is None else [Middleware(RequireKey, api_key=api_key)]


__all__ = ["RequireKey", "bearer_matches", "key_required"]
