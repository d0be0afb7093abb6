"""The web-page defences, one ASGI middleware around the whole app (every route, now and later).

A server on 127.0.0.1 without a key is reachable by every web page the user opens: a
page can POST a "simple" request (``text/plain``, no CORS preflight) and, after DNS
rebinding (its own name re-pointed at 127.0.0.1), even read the answers. In order:

1. **Host.** Only loopback names are served (``localhost``, ``127.0.0.0/8``, ``[::1]``,
   with or without a port); a rebinding page sends its own name. A non-loopback bind
   adds that address (any IP literal for ``0.0.0.0``/``::``) and the machine's names;
   ``--allow-host`` adds more (``*`` any). A request without ``Host`` (HTTP/1.0) is not
   a browser's and passes.
2. **Origin.** Browsers send ``Origin`` on cross-origin requests; one that is not
   allowed is refused (403), before any route runs. Allowed: loopback pages
   (``http(s)://localhost|127.x.x.x|[::1]`` on any port), VS Code's webviews
   (``vscode-webview://``, ``vscode-file://``) and ``--allow-origin`` patterns. No
   ``Origin`` (curl, SDKs, editors) passes.
3. **CORS preflight.** ``OPTIONS`` with ``Access-Control-Request-Method`` is answered
   here: 204 with the CORS headers for an allowed origin, 403 otherwise. Actual
   responses to an allowed origin carry ``Access-Control-Allow-Origin`` (echoed).
4. **Content type.** A ``POST``/``PUT``/``PATCH`` must say ``application/json``
   (a charset parameter is fine): 415 otherwise, so no form or ``text/plain`` body runs.

Errors use the route's dialect (:func:`~.errors.error_payload`): OpenAI's shape, Ollama's
``{"error": "..."}`` under ``/api/``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from typing import Any, Awaitable, Callable, Iterable, Mapping

from .errors import error_payload

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Loopback pages on any port, and VS Code's own webviews (code the user installed in the
# editor). Browser extensions (chrome-extension://, moz-extension://) are not here: any
# installed extension, even one without permission to reach localhost, could then use the
# model; allow the one you trust with --allow-origin chrome-extension://ID.
DEFAULT_ORIGINS = (
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.*",
    "https://127.*",
    "http://[::1]",
    "https://[::1]",
    "http://[::1]:*",
    "https://[::1]:*",
    "vscode-webview://*",
    "vscode-file://*",
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
PREFLIGHT_MAX_AGE = "600"


def split_host(value: str) -> str:
    """A Host header's name without its port, lower-case, IPv6 brackets removed."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a bare IPv6 address (not valid in Host, but not a port either) or a name


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def is_loopback_name(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)."""
    name = name.strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    ip = _ip(name)
    if ip is None:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def machine_names() -> set[str]:
    """This machine's host names (short, fully qualified, ``.local``), lower-case."""
    names: set[str] = set()
    for get in (socket.gethostname, socket.getfqdn):
        try:
            name = get().lower().rstrip(".")
        except OSError:
            continue
        if name:
            names.update({name, name.split(".", 1)[0], name.split(".", 1)[0] + ".local"})
    return names


class WebPolicy:
    """Which Host names and Origins the server answers; built once from the bind address and flags."""

    def __init__(
        self, bind: str = "127.0.0.1", allow_hosts: Iterable[str] = (), allow_origins: Iterable[str] = ()
    ) -> None:
        self.bind, self.allow_hosts, self.allow_origins = bind, tuple(allow_hosts), tuple(allow_origins)
        names = {split_host(h) if h.strip() != "*" else "*" for h in self.allow_hosts if h.strip()}
        bind = bind.strip("[]").lower()
        self._any_ip = False
        if not is_loopback_name(bind):
            names |= machine_names()
            ip = _ip(bind)
            if ip is not None and ip.is_unspecified:
                self._any_ip = True  # 0.0.0.0 / :: - every address of the machine
            else:
                names.add(bind)
        self._hosts = frozenset(names)
        patterns = [o.strip().lower().rstrip("/") for o in (*DEFAULT_ORIGINS, *self.allow_origins)]
        self._origins = tuple(p for p in patterns if p)

    def host_allowed(self, host: str | None) -> bool:
        if host is None:
            return True
        name = split_host(host).rstrip(".")
        if "*" in self._hosts or is_loopback_name(name) or name in self._hosts:
            return True
        # A DNS-rebinding page always sends a name: an IP literal on a wildcard bind is safe.
        return bool(self._any_ip and _ip(name) is not None)

    def origin_allowed(self, origin: str | None) -> bool:
        if origin is None:
            return True
        origin = origin.strip().lower().rstrip("/")
        for pattern in self._origins:
            if pattern == "*" or pattern == origin:
                return True
            if "*" in pattern and _glob(pattern).fullmatch(origin) and _sane_origin(origin, pattern):
                return True
        return False


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything; every other character (``[`` too) only itself."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def _sane_origin(origin: str, pattern: str) -> bool:
    """``http://127.*`` must not match ``http://127.evil.example``: the host part is checked."""
    if pattern.startswith(("http://127.", "https://127.")):
        host = origin.split("://", 1)[1]
        return is_loopback_name(split_host(host))
    if pattern.endswith(":*"):  # http://localhost:* - only digits after the colon
        return origin.rsplit(":", 1)[1].isdigit()
    return True


def error_body(path: str, status: int, message: str, code: str) -> bytes:
    """A JSON error in the dialect of the route at ``path``."""
    type_ = "permission_error" if status == 403 else "invalid_request_error"
    return json.dumps(error_payload(path, message, type_, code)).encode()


def is_json_type(content_type: str | None) -> bool:
    """``application/json``, with or without parameters such as ``charset``."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _headers(scope: Scope) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers") or ():
        name = key.decode("latin-1").lower()
        if name not in out:  # the first one wins (a repeated Host is refused below)
            out[name] = value.decode("latin-1")
    return out


class WebGuard:
    """The ASGI middleware: Host, Origin, preflight and content-type rules before any route."""

    def __init__(self, app: ASGIApp, policy: WebPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path = scope.get("path", "")
        method = scope.get("method", "GET").upper()
        host, origin = headers.get("host"), headers.get("origin")
        hosts = [v for k, v in scope.get("headers") or () if k.lower() == b"host"]
        if len(hosts) > 1 or not self.policy.host_allowed(host):
            await _reply(
                send,
                403,
                error_body(
                    path,
                    403,
                    f"Host {host!r} is not allowed: this server answers loopback names only; "
                    f"start it with --allow-host NAME (or STARCHAT_ALLOW_HOST) to accept it",
                    "host_not_allowed",
                ),
            )
            return
        if not self.policy.origin_allowed(origin):
            await _reply(
                send,
                403,
                error_body(
                    path,
                    403,
                    f"Origin {origin!r} is not allowed: start the server with --allow-origin "
                    f"{origin} (or STARCHAT_ALLOW_ORIGIN) to let that page use it",
                    "origin_not_allowed",
                ),
            )
            return
        if method == "OPTIONS" and origin is not None and "access-control-request-method" in headers:
            extra = [
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
            ]
            asked = headers.get("access-control-request-headers")
            if asked:
                extra.append((b"access-control-allow-headers", asked.encode("latin-1")))
            if headers.get("access-control-request-private-network", "").lower() == "true":
                extra.append((b"access-control-allow-private-network", b"true"))
            await _reply(send, 204, b"", cors=origin, extra=extra)
            return
        if method in BODY_METHODS and not is_json_type(headers.get("content-type")):
            got = headers.get("content-type")
            await _reply(
                send,
                415,
                error_body(
                    path,
                    415,
                    f"the body must be JSON: send 'Content-Type: application/json' (got {got!r})"
                    if got
                    else "the body must be JSON: send 'Content-Type: application/json'",
                    "unsupported_media_type",
                ),
                cors=origin,
            )
            return
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *_cors_headers(origin)],
                }
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    *,
    cors: str | None = None,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    if cors is not None:
        headers.extend(_cors_headers(cors))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["DEFAULT_ORIGINS", "WebGuard", "WebPolicy", "error_body", "is_json_type", "split_host"]
