"""An OpenAI-compatible HTTP API over the starchat engine (Starlette; run by uvicorn).

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or
server-sent events), ``POST /v1/completions``, ``POST /infill``, Ollama's API
(:mod:`.ollama`: ``/api/generate``, ``/api/chat``, ``/api/tags``, ...), and llama.cpp's
``/tokenize``, ``/detokenize``, ``/props`` with the refusals of what is not served (:mod:`.extras`). Every route sits behind
:class:`~.guard.WebGuard` (Host, Origin, CORS preflight, JSON content type). Requests queue on the one model (the
engine's lock); a client that disconnects mid-stream stops its generation. Handlers raise;
the exception handlers registered here (:mod:`.errors`) answer in the route's dialect:
OpenAI's ``{"error": {"message", "type", "param", "code"}}``, Ollama's ``{"error": "..."}``
under ``/api/``. The routes that need the API key say so where they are listed (:mod:`.auth`).

This module is the factory, :func:`make_app`; the pieces live beside it (see the
package's docstring). ``ServerConfig`` is importable from here too.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware

from starchat_cli.engine.contract import Engine

from .bridge import Bridge
from .config import ServerConfig
from .errors import EXCEPTION_HANDLERS
from .extras import ExtraEndpoints
from .guard import WebGuard, WebPolicy
from .ollama import OllamaEndpoints
from .routes import Endpoints


def make_app(
    engine: Engine, config: ServerConfig, *, on_shutdown: Callable[[], None] | None = None
) -> Starlette:
    """Build the ASGI app for one engine (an app factory: nothing is built at import)."""
    bridge = Bridge(after=engine.persist)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        bridge.shutting_down.set()  # in-flight streams end at their next token
        if on_shutdown is not None:
            on_shutdown()

    app = Starlette(
        routes=[
            *Endpoints(engine, config, bridge).routes(),
            *OllamaEndpoints(engine, config, bridge).routes(),
            *ExtraEndpoints(engine, config, bridge).routes(),  # after the others: it has catch-alls
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # handlers raise; these answer
        lifespan=lifespan,
        # Host, Origin, CORS preflight and content type: on every route, also ones added later.
        middleware=[
            Middleware(
                WebGuard,
                policy=WebPolicy(config.bind_host, config.allow_hosts, config.allow_origins),
            )
        ],
    )
    # The server sets this on Ctrl-C, before it waits for open connections: in-flight
    # generations stop at their next token and their streams end properly.
    app.state.shutting_down = bridge.shutting_down
    return app


__all__ = ["ServerConfig", "make_app"]
