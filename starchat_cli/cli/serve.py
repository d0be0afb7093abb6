"""``starchat serve``: the local model behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import os
from types import FrameType
from typing import Optional

import typer

from starchat_cli.cli.limits import number
from starchat_cli.cli.options import Ctx, Draft, Gpu, Model, Threads
from starchat_cli.core import defaults

SERVE_HELP = """\
Serve a model over an OpenAI-compatible HTTP API (for editors, scripts, other tools).

\b
  starchat serve -m starchat2                      # http://127.0.0.1:8080/v1
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"messages": [{"role": "user", "content": "hello"}]}'

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (stream or not),
POST /v1/completions, and Ollama's API for editors (http://127.0.0.1:8080 as an Ollama
host: /api/generate, /api/chat, /api/tags, /api/show, /api/ps, /api/version), and llama.cpp's
POST /infill, /tokenize, /detokenize, GET /props. Any model name gets the served model
(--strict-model: a 404). It binds to loopback by default; binding any other address
requires --api-key (clients then send "Authorization: Bearer KEY"). Ctrl-C stops it.

Web pages cannot use it: only loopback Host names are answered (--allow-host adds
more), a browser Origin other than a loopback page or a VS Code webview is refused
(--allow-origin adds more), and POST bodies must be Content-Type: application/json.
"""


def register(app: typer.Typer) -> None:
    app.command("serve", help=SERVE_HELP)(serve)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listed(flags: Optional[list[str]], var: str) -> tuple[str, ...]:
    """The flag's values, or else the environment variable's comma-separated ones."""
    values = flags or os.environ.get(var, "").split(",")
    return tuple(v.strip() for v in values if v.strip())


def serve(
    command: typer.Context,
    model: Model = None,
    host: str = typer.Option(
        defaults.SERVE_HOST, "--host", help="Address to bind; anything but loopback needs --api-key."
    ),
    port: int = typer.Option(defaults.SERVE_PORT, "--port", "-p", help="TCP port.", callback=number("port")),
    api_key: Optional[str] = typer.Option(
        None,
        "--api-key",
        help="Require this Bearer key on every request. [env: STARCHAT_API_KEY]",
        show_default=False,
    ),
    ctx: Ctx = None,
    threads: Threads = None,
    gpu: Gpu = None,
    draft: Draft = None,
    max_tokens_limit: int = typer.Option(
        defaults.SERVE_MAX_TOKENS,
        "--max-tokens-limit",
        help="Largest max_tokens a request may ask for.",
        callback=number("max_tokens_limit"),
    ),
    max_body: int = typer.Option(
        defaults.SERVE_MAX_BODY,
        "--max-body",
        help="Largest request body in bytes.",
        callback=number("max_body"),
    ),
    allow_host: Optional[list[str]] = typer.Option(
        None,
        "--allow-host",
        metavar="<name>",
        help="Also answer requests with this Host name (repeatable; * any). [env: STARCHAT_ALLOW_HOST, comma-separated]",
        show_default=False,
    ),
    strict_model: bool = typer.Option(
        False,
        "--strict-model",
        help="Refuse (404) a request whose 'model' is not this model's name or alias; by default any "
        "name gets the served model, as llama-server does.",
    ),
    allow_origin: Optional[list[str]] = typer.Option(
        None,
        "--allow-origin",
        metavar="<origin>",
        help="Also serve web pages from this Origin, e.g. chrome-extension://ID or https://app.example "
        "(repeatable; * any; a * in it matches anything). [env: STARCHAT_ALLOW_ORIGIN, comma-separated]",
        show_default=False,
    ),
) -> None:
    import socket

    from starchat_cli.cli.engines import Use, load, open_for
    from starchat_cli.cli.terminal import note
    from starchat_cli.core.errors import ConfigError, StarchatError

    key = api_key or os.environ.get("STARCHAT_API_KEY") or None
    if not is_loopback(host) and not key:
        raise ConfigError(
            f"binding {host} exposes the model to the network: add --api-key KEY (or set STARCHAT_API_KEY)"
        )
    hosts = _listed(allow_host, "STARCHAT_ALLOW_HOST")
    origins = _listed(allow_origin, "STARCHAT_ALLOW_ORIGIN")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise StarchatError(
                f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port"
            ) from None

    settings, engine = open_for(command, Use.SERVE)
    info = load(engine)

    import uvicorn

    from starchat_cli.server.app import ServerConfig, make_app

    config = ServerConfig(
        model_name=info.name,
        aliases=info.aliases,
        api_key=key,
        max_body_bytes=max_body,
        max_tokens_limit=max_tokens_limit,
        default_temperature=settings.temperature,
        default_top_p=settings.top_p,
        default_seed=settings.seed,
        bind_host=host,
        allow_hosts=hosts,
        allow_origins=origins,
        draft=settings.draft,
        strict_model=strict_model,
        notify=note,
    )
    app = make_app(engine, config)
    shown = f"[{host}]" if ":" in host else host
    note(
        f"serving {info.name} at http://{shown}:{port}/v1 "
        f"and as an Ollama host at http://{shown}:{port} "
        f"(context {info.n_ctx} tokens{', API key required' if key else ''}); Ctrl-C stops"
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.shutting_down.set()  # end in-flight streams now, not after the grace period
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=5,
            access_log=False,
        )
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown: stopping is the normal end here
    note("server stopped")
