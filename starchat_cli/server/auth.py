"""The API key check: ``Authorization: Bearer KEY``, compared in constant time.

Every route but ``/health`` calls :func:`check_auth`; with no key configured it lets
everything through (the server then listens on loopback only, see cli/serve.py).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from .errors import APIError


def bearer_matches(header: str, api_key: str) -> bool:
    """Whether an Authorization header value carries ``api_key`` in the Bearer scheme."""
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def check_auth(request: Request, api_key: str | None) -> None:
    """Raise a 401 unless the request carries the key (always passes when ``api_key`` is None)."""
    if api_key is None:
        return
    if not bearer_matches(request.headers.get("authorization", ""), api_key):
        raise APIError(
            401,
            "invalid or missing API key: send 'Authorization: Bearer KEY'",
            "authentication_error",
            "invalid_api_key",
        )


__all__ = ["bearer_matches", "check_auth"]
