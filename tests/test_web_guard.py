"""The web-page defences (server/guard.py) over real HTTP, with raw ``http.client`` requests.

A browser decides the ``Host`` and ``Origin`` headers, so the tests set them by hand on
a real socket: the app runs in uvicorn on a free loopback port (fake engine, no model),
and one ``starchat serve`` process (the demo model) checks the flags, the environment
variable and a wildcard bind end to end.
"""

from __future__ import annotations

import functools
import json
import socket

import pytest

from starchat_cli.server.guard import WebPolicy, split_host

from .helpers.servers import Served, raw_request, start_server, stop_server

CHAT = "/v1/chat/completions"
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
JSON = {"Content-Type": "application/json"}


def test_curl_without_origin_is_served(web):
    status, _, body = web.request("GET", "/health")
    assert status == 200 and body["status"] == "ok"
    status, headers, body = web.request("POST", CHAT, BODY, JSON)
    assert status == 200 and body["choices"][0]["message"]["content"] == "one two three"
    assert "access-control-allow-origin" not in headers  # no Origin, no CORS headers


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:1", "127.5.6.7:80", "[::1]", "[::1]:8080", ""],
)
def test_loopback_hosts_are_served(web, host):
    status, _, _ = web.request("GET", "/health", host=host or f"localhost:{web.port}")
    assert status == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example", "10.0.0.5"],
)
def test_a_rebinding_host_is_refused_before_the_model_runs(web, host):
    before = web.generations()
    status, _, body = web.request("POST", CHAT, BODY, JSON, host=host)
    assert status == 403 and body["error"]["code"] == "host_not_allowed"
    assert "--allow-host" in body["error"]["message"] and body["error"]["type"] == "permission_error"
    assert web.generations() == before
    assert web.request("GET", "/health", host=host)[0] == 403  # every route


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_an_evil_origin_is_refused_whatever_the_content_type(web, content_type):
    before = web.generations()
    status, headers, body = web.request(
        "POST", CHAT, BODY, {"Content-Type": content_type, "Origin": "http://evil.example"}
    )
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    assert "--allow-origin http://evil.example" in body["error"]["message"]
    assert "access-control-allow-origin" not in headers
    assert web.generations() == before


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://[::1]:8000",
        "https://localhost",
        "vscode-webview://1a2b3c",
        "vscode-file://vscode-app",
    ],
)
def test_loopback_pages_and_vscode_webviews_are_served_with_cors(web, origin):
    status, headers, body = web.request("POST", CHAT, BODY, {**JSON, "Origin": origin})
    assert status == 200 and body["object"] == "chat.completion"
    assert headers["access-control-allow-origin"] == origin and headers["vary"] == "Origin"


@pytest.mark.parametrize(
    "origin",
    [
        "null",  # sandboxed iframes, file:// pages
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example",
        "http://localhost:80.evil.example",
        "chrome-extension://abcdef",
        "https://evil.example",
    ],
)
def test_look_alike_origins_are_refused(web, origin):
    assert web.request("GET", "/v1/models", headers={"Origin": origin})[0] == 403


def test_preflight_is_answered_for_allowed_origins_only(web):
    asked = {
        "Origin": "http://localhost:5173",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
        "Access-Control-Request-Private-Network": "true",
    }
    status, headers, body = web.request("OPTIONS", CHAT, headers=asked)
    assert status == 204 and body is None
    assert headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "content-type, authorization"
    assert headers["access-control-allow-private-network"] == "true"
    status, headers, body = web.request("OPTIONS", CHAT, headers={**asked, "Origin": "http://evil.example"})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in headers
    # An OPTIONS that is not a preflight goes to the routes (no OPTIONS route: 405).
    assert web.request("OPTIONS", CHAT)[0] == 405


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}],
    ids=["missing", "text/plain", "form"],
)
def test_a_body_that_is_not_declared_json_is_415(web, headers):
    before = web.generations()
    for path in (CHAT, "/v1/completions"):
        status, _, body = web.request("POST", path, BODY, headers)
        assert status == 415 and body["error"]["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in body["error"]["message"]
    assert web.generations() == before
    ok = web.request("POST", CHAT, BODY, {"Content-Type": "application/json; charset=utf-8"})
    assert ok[0] == 200


def test_errors_under_api_have_ollamas_shape(web):
    status, _, body = web.request("POST", "/api/chat", BODY, JSON, host="evil.example")
    assert status == 403 and isinstance(body["error"], str) and "--allow-host" in body["error"]
    status, _, body = web.request("POST", "/api/generate", BODY, {"Origin": "http://evil.example"})
    assert status == 403 and "--allow-origin" in body["error"]
    status, _, body = web.request("POST", "/api/generate", BODY, {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in body["error"]


def test_allow_flags_in_process():
    served = Served(allow_hosts=("box.lan",), allow_origins=("https://app.example", "chrome-extension://*"))
    try:
        assert served.request("GET", "/health", host="box.lan:8080")[0] == 200
        assert served.request("GET", "/health", host="other.lan")[0] == 403
        status, headers, _ = served.request("GET", "/v1/models", headers={"Origin": "https://app.example"})
        assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
        assert served.request("GET", "/v1/models", headers={"Origin": "chrome-extension://xyz"})[0] == 200
        assert served.request("GET", "/v1/models", headers={"Origin": "https://app.example.evil"})[0] == 403
    finally:
        served.close()
    anything = Served(allow_hosts=("*",), allow_origins=("*",))
    try:
        status, _, _ = anything.request("POST", CHAT, BODY, {**JSON, "Origin": "http://x.example"}, host="y")
        assert status == 200
    finally:
        anything.close()


def test_policy_rules():
    assert split_host("[::1]:80") == "::1" and split_host("Example.COM:1") == "example.com"
    loop = WebPolicy()
    assert loop.host_allowed(None) and not loop.host_allowed("192.168.1.2")
    wild = WebPolicy("0.0.0.0")
    assert wild.host_allowed("192.168.1.2:8080") and wild.host_allowed(socket.gethostname())
    assert not wild.host_allowed("evil.example")
    one = WebPolicy("192.168.1.2")
    assert one.host_allowed("192.168.1.2") and not one.host_allowed("192.168.1.3")


def machine_ip() -> str:
    """An address of this machine other than loopback (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            ip = "0.0.0.0"
    if ip.startswith(("0.", "127.")):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return ip


@pytest.mark.e2e
def test_starchat_serve_on_all_addresses_with_the_flags_and_env(demo_gguf, tmp_path):
    ip = machine_ip()
    proc, base = start_server(
        "--host",
        "0.0.0.0",
        "--api-key",
        "k",
        "--allow-host",
        "box.lan",
        env={
            "STARCHAT_HOME": str(tmp_path),
            "STARCHAT_ALLOW_ORIGIN": "https://app.example, moz-extension://*",
        },
    )
    try:
        port = int(base.rsplit(":", 1)[1])
        request = functools.partial(raw_request, port)
        auth = {"Authorization": "Bearer k"}
        assert request("GET", "/health", host=f"{ip}:{port}")[0] == 200  # the machine's address
        assert request("GET", "/health", host=f"{socket.gethostname()}:{port}")[0] == 200
        assert request("GET", "/health", host="box.lan")[0] == 200  # --allow-host
        status, _, body = request("GET", "/health", host="evil.example")
        assert status == 403 and body["error"]["code"] == "host_not_allowed"
        status, headers, _ = request("GET", "/v1/models", headers={**auth, "Origin": "https://app.example"})
        assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
        assert request("GET", "/v1/models", headers={**auth, "Origin": "moz-extension://a1"})[0] == 200
        status, _, _ = request("POST", CHAT, BODY, {**auth, "Content-Type": "text/plain"})
        assert status == 415
        status, _, body = request("POST", CHAT, BODY, {**auth, **JSON, "Origin": "http://evil.example"})
        assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    finally:
        err = stop_server(proc)
    assert proc.returncode == 0, err.decode()
