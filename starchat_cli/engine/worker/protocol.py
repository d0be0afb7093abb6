"""Frames between a face and its model's worker: 4-byte big-endian length + a UTF-8 JSON object.

    send(sock, {"op": "generate", "turns": [["user", "hi"]], "params": {...}})
    frame = recv(sock)          # {"op": "chunk", "text": "Hel"}; None: the peer closed cleanly

Requests (client -> worker): ``hello`` (protocol, version, key), ``load``, ``info``, ``generate``,
``complete``, ``infill``, ``count_tokens``, ``tokenize``, ``token_pieces``, ``persist``, ``cancel`` (no reply), ``status``
(``starchat ps``), ``leave`` (will the worker exit with this client?), ``shutdown``.
Replies: ``hello``, ``info``, ``status``, ``leave``, ``started`` (stats, fit, prompt_text: what ``generate`` returns at
once), ``chunk`` (text, tokens so far, the new logprob entries when asked for), ``done`` (final stats, info,
the last logprob entries), ``count``, ``tokens``, ``pieces`` (hex), ``ok``, ``error`` (a StarchatError's
class name, message and exit code: :func:`raise_error` raises the same type on the client side).
A frame over :data:`MAX_FRAME`, cut short or not a JSON object is a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import asdict, fields
from typing import Any

from starchat_cli.core import errors
from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import CacheSource, EngineInfo, Stats, StopReason, TokenLogprob
from starchat_cli.engine.prompting.fit import FitResult
from starchat_cli.engine.prompting.formats import Message

MAX_FRAME = 256 << 20  # a piped file of many MB fits; a garbled length does not allocate GBs
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A garbled, short or oversized frame: the connection cannot be trusted any more."""


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"a {message.get('op')} frame of {len(data):,} bytes is over the limit")
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame; None when the peer closed the connection between frames."""
    header = _read(sock, _HEADER.size, at_boundary=True)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"a frame of {size:,} bytes announced: over the {MAX_FRAME:,}-byte limit")
    body = _read(sock, size, at_boundary=False) or b""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"a frame that is not UTF-8 JSON: {body[:40]!r}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError(f"a frame that is not a message: {body[:40]!r}")
    return message


def _read(sock: socket.socket, n: int, *, at_boundary: bool) -> bytes | None:
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = sock.recv(min(n - got, 1 << 20))
        if not part:
            if at_boundary and got == 0:
                return None
            raise ProtocolError(f"the connection closed {got} bytes into a {n}-byte read")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED); None where the OS has no such option."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


# -- errors -------------------------------------------------------------------------------


def error_frame(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, StarchatError):
        return {"op": "error", "type": type(exc).__name__, "message": exc.message, "exit_code": exc.exit_code}
    return {
        "op": "error",
        "type": "",
        "message": f"unexpected {type(exc).__name__} in the model worker: {exc}",
        "exit_code": errors.ExitCode.ERROR,
    }


def raise_error(frame: dict[str, Any]) -> None:
    """Raise the error a worker reported, as the same StarchatError subclass (core/errors.py)."""
    cls = getattr(errors, str(frame.get("type") or ""), None)
    if not (isinstance(cls, type) and issubclass(cls, StarchatError)):
        cls = StarchatError
    exc = cls(str(frame.get("message", "the model worker failed")))
    exc.exit_code = int(frame.get("exit_code", exc.exit_code))
    raise exc


# -- the contract's data as JSON --------------------------------------------------------


def stats_dict(stats: Stats) -> dict[str, Any]:
    out = asdict(stats)
    out["stop_reason"], out["cached_from"] = str(stats.stop_reason), str(stats.cached_from)
    return out


def update_stats(stats: Stats, data: dict[str, Any]) -> None:
    """Write ``data`` (a :func:`stats_dict`) into ``stats`` in place: a face holds that object."""
    for f in fields(Stats):
        if f.name in data:
            setattr(stats, f.name, data[f.name])
    stats.stop_reason = StopReason(stats.stop_reason)
    stats.cached_from = CacheSource(stats.cached_from)


def messages_list(messages: list[Message]) -> list[list[str]]:
    return [[m.role, m.content] for m in messages]


def messages_of(data: list[list[Any]]) -> list[Message]:
    return [Message(role, content) for role, content in data]


def fit_dict(fit: FitResult) -> dict[str, Any]:
    return {**asdict(fit), "messages": messages_list(fit.messages)}


def fit_of(data: dict[str, Any]) -> FitResult:
    return FitResult(**{**data, "messages": messages_of(data.get("messages", []))})


def logprobs_list(entries: list[TokenLogprob]) -> list[list[Any]]:
    """Logprob entries as compact JSON: ``[token, bytes, logprob, [[token, bytes, logprob, id], ...], id]``."""
    return [
        [e.token, list(e.bytes), e.logprob, [[t.token, list(t.bytes), t.logprob, t.id] for t in e.top], e.id]
        for e in entries
    ]


def logprobs_of(data: list[list[Any]]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token,
            tuple(raw),
            logprob,
            tuple(TokenLogprob(t, tuple(b), lp, (), i) for t, b, lp, i in top),
            id_,
        )
        for token, raw, logprob, top, id_ in data
    ]


def info_dict(info: EngineInfo) -> dict[str, Any]:
    return asdict(info)


def info_of(data: dict[str, Any]) -> EngineInfo:
    tuples = {f.name for f in fields(EngineInfo) if str(f.type).startswith("tuple")}
    values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
    return EngineInfo(**values)


__all__ = [
    "MAX_FRAME",
    "ProtocolError",
    "error_frame",
    "fit_dict",
    "fit_of",
    "info_dict",
    "info_of",
    "logprobs_list",
    "logprobs_of",
    "messages_list",
    "messages_of",
    "peer_uid",
    "raise_error",
    "recv",
    "send",
    "stats_dict",
    "update_stats",
]
