"""A request's body as a JSON object: read and checked in one place for every route.

    data = await read_json(request, config.max_body_bytes)  # /v1/*, /api/*, /infill
    data = parse_json(b'{"options": {"seed": 1e400}}')  # APIError 400: 'options.seed' ...

Whatever a route does with the fields, the body it gets is bounded (413 past the limit),
valid JSON, an object, nested no deeper than :data:`MAX_DEPTH` levels (a body of 100,000
``[`` would otherwise be a RecursionError and a 500), and holds only finite numbers:
Python reads ``1e400`` as ``inf``, which no field accepts and ``int()`` cannot convert (an
OverflowError and a 500); here it is a 400 naming the field. Errors are
:class:`~.errors.APIError` in OpenAI's shape; the Ollama routes re-shape them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import APIError

# Arrays and objects inside each other; real requests use a handful (a message's content
# parts are 4 deep, a JSON schema in response_format rarely 20), json's parser gives up near 1,000.
MAX_DEPTH = 100


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, read no further than ``max_bytes``."""
    too_large = APIError(413, f"request body over {max_bytes} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_large
    except ClientDisconnect:
        raise APIError(400, "client disconnected") from None
    return parse_json(body)


def parse_json(body: bytes) -> dict[str, Any]:
    """A request body's JSON object, or a 400 (``invalid_json``, too deep, a number out of range)."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    check_values(data)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep() -> APIError:
    return APIError(
        400,
        f"request body nested too deeply: more than {MAX_DEPTH} levels of arrays and objects",
        code="invalid_json",
    )


def check_values(data: dict[str, Any]) -> None:
    """Walk the body (without recursion: any depth is safe here): a 400 for nesting past
    :data:`MAX_DEPTH`, or for a number too large for a float, naming its place in the body."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            if isinstance(value, float) and not math.isfinite(value):
                raise _out_of_range(path)
            continue
        if depth > MAX_DEPTH:
            raise _too_deep()
        stack.extend((v, p, depth + 1) for v, p in reversed(children))  # the first field first


def _out_of_range(path: str) -> APIError:
    top = path.split(".", 1)[0].split("[", 1)[0]
    return APIError(
        400,
        f"'{path}' is out of range: a number must be finite, within about ±1.8e308",
        code="invalid_value",
        param=top,
    )


__all__ = ["MAX_DEPTH", "check_values", "parse_json", "read_json"]
