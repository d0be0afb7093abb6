"""Servers for the tests: `starchat serve` subprocesses, loopback HTTP servers, the app in uvicorn.

proc, base = start_server("--ctx", "1024")       # `starchat serve -m demo` on a free port, healthy
stop_server(proc)                                 # Ctrl-C, as a user stops it: its stderr
http = LoopbackServer(Handler)                    # a BaseHTTPRequestHandler on a free port, in a thread
web = Served()                                    # the server app (fake engine) in uvicorn, in a thread
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .cli import start_starchat
from .fake_engine import FakeEngine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, deadline: float = 120) -> None:
    """Until ``url`` answers 200; fails with the server's stderr if it exits first."""
    import httpx

    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became healthy")


def start_server(
    *args: str, model: str = "demo", env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`starchat serve -m MODEL ARGS` on a free loopback port, once /health answers: (process, base URL).

    Its model worker exits with it (keep-alive 0) unless ``env`` says otherwise: a module's server
    starts before the per-test settings of conftest.py apply."""
    port = free_port()
    env = {"STARCHAT_KEEP_ALIVE": "0", **(env or {})}
    proc = start_starchat(["serve", "-m", model, "--port", str(port), *args], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(f"{base}/health", proc)
    return proc, base


def stop_server(proc: subprocess.Popen) -> bytes:
    """Ctrl-C, as a user stops it; its stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return err


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers whole bodies with ``send``."""

    def log_message(self, *args: object) -> None:
        pass

    def send(self, ctype: str, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer:
    """``handler`` served by a ThreadingHTTPServer on a free loopback port, in a daemon thread:
    a remote engine played by the test (a fake model, a broken endpoint)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raw_request(
    port: int,
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request to 127.0.0.1:``port`` with exactly these headers (as a browser may send them):
    (status, lower-cased headers, JSON body). ``host`` replaces the Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        data = body.encode() if body is not None else None
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        res = conn.getresponse()
        raw = res.read()
        got = {k.lower(): v for k, v in res.getheaders()}
        return res.status, got, json.loads(raw) if raw else None
    finally:
        conn.close()


class Served:
    """The server app (``make_app`` over a FakeEngine) in uvicorn on 127.0.0.1:port, in a thread,
    with a generation counter: real sockets without a model."""

    def __init__(self, **config: Any) -> None:
        import uvicorn

        from starchat_cli.server.app import ServerConfig, make_app

        self.engine = FakeEngine("one two three")
        self.port = free_port()
        app = make_app(self.engine, ServerConfig(model_name="fake", **config))
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host=config.get("bind_host", "127.0.0.1"), port=self.port, log_level="warning"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        end = time.time() + 30
        while not self.server.started:
            assert time.time() < end and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        return raw_request(self.port, method, path, *args, **kwargs)

    def generations(self) -> int:
        return len(self.engine.calls)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
