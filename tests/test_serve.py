"""`starchat serve` on a real loopback port with the demo model, and `ask --endpoint`.

Clients no one here wrote (the `openai` package, httpx) talk to our server, and our
remote backend talks to llama-cpp-python's own OpenAI-compatible server.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode

from .helpers.cli import run_starchat
from .helpers.servers import LoopbackServer, QuietHandler, free_port, start_server, stop_server, wait_healthy
from .helpers.tui import say

pytestmark = pytest.mark.e2e

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(demo_gguf, tmp_path_factory):
    home = str(tmp_path_factory.mktemp("serve-home"))
    proc, base = start_server(
        "--api-key",
        KEY,
        "--max-tokens-limit",
        "3000",
        "--max-body",
        "100000",
        "--strict-model",  # test_error_shapes: another model name is a 404
        env={"STARCHAT_HOME": home},
    )
    yield base
    err = stop_server(proc)  # Ctrl-C shuts it down cleanly
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"server stopped" in err


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def openai_client(base: str):
    import openai

    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)


def test_openai_client_chat_streaming_and_not(server):
    client = openai_client(server)
    messages = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    whole = client.chat.completions.create(model="demo", messages=messages, max_tokens=40, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 40 and whole.usage.prompt_tokens > 10
    stream = client.chat.completions.create(
        model="demo", messages=messages, max_tokens=40, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 5
    assert "".join(pieces) == text  # greedy: the same reply either way


def test_openai_client_completions(server):
    client = openai_client(server)
    res = client.completions.create(model="demo", prompt="def add(a, b):\n", max_tokens=16, temperature=0)
    assert res.choices[0].text
    assert res.usage.completion_tokens == 16 or res.choices[0].finish_reason == "stop"


def test_models_and_health(server):
    res = httpx.get(f"{server}/v1/models", headers=auth())
    assert res.status_code == 200 and res.json()["data"][0]["id"] == "demo"
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["loaded"] is True


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}],
    ids=["missing key", "wrong key", "right key, other scheme", "right key, no scheme"],
)
def test_api_key_is_required(server, headers):
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 1}),
    ):
        res = httpx.post(f"{server}{path}", json=body, headers=headers)
        assert res.status_code == 401 and res.json()["error"]["code"] == "invalid_api_key", path
        ok = httpx.post(f"{server}{path}", json=body, headers=auth(), timeout=120)
        assert ok.status_code == 200, path
    assert httpx.get(f"{server}/v1/models", headers=headers).status_code == 401


def test_error_shapes(server):
    url = f"{server}/v1/chat/completions"
    bad = httpx.post(url, content=b"{not json", headers={**auth(), "Content-Type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    unknown = httpx.post(
        url, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, headers=auth()
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    big = httpx.post(
        url,
        content=b'{"messages": "' + b"x" * 200_000 + b'"}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert big.status_code == 413
    too_many = httpx.post(
        url, json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}, headers=auth()
    )
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_tokens"
    no_user = httpx.post(url, json={"messages": [{"role": "assistant", "content": "x"}]}, headers=auth())
    assert no_user.status_code == 400 and no_user.json()["error"]["type"] == "invalid_request_error"
    huge_prompt = httpx.post(
        url,
        json={"messages": [{"role": "user", "content": "word " * 9000}], "max_tokens": 10},
        headers=auth(),
    )
    assert huge_prompt.status_code == 400 and huge_prompt.json()["error"]["code"] == "context_length_exceeded"
    # many turns that fit only without the oldest: a 400 on /v1 (never a silently shortened
    # conversation), streamed or not; Ollama's /api/chat keeps Ollama's rule and drops the oldest
    turns = [
        {"role": "system", "content": "Book"},
        {"role": "user", "content": "What is the best book " * 8},
    ] * 100
    for stream in (False, True):
        long_chat = httpx.post(
            url, json={"messages": turns, "max_tokens": 4, "stream": stream}, headers=auth(), timeout=120
        )
        assert long_chat.status_code == 400, long_chat.text
        error = long_chat.json()["error"]
        assert error["code"] == "context_length_exceeded" and "oldest turns" in error["message"]
    ollama = httpx.post(
        f"{server}/api/chat",
        json={"model": "demo", "messages": turns, "stream": False, "options": {"num_predict": 4}},
        headers=auth(),
        timeout=300,
    )
    assert ollama.status_code == 200 and ollama.json()["message"]["content"]
    assert httpx.get(f"{server}/v1/nothing").json()["error"]["code"] == "not_found"


def test_twenty_concurrent_requests_all_answered(server):
    results: list[tuple[int, str]] = []

    def one(i: int) -> None:
        res = httpx.post(
            f"{server}/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": f"Say the number {i}."}],
                "max_tokens": 8,
                "temperature": 0,
            },
            headers=auth(),
            timeout=300,
        )
        results.append((res.status_code, res.json()["choices"][0]["message"]["content"]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 20
    assert all(status == 200 and text for status, text in results)


def test_disconnect_mid_stream_frees_the_model(server):
    before = httpx.get(f"{server}/health").json()["generations"]["cancelled"]
    body = {
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 2500,
        "stream": True,
    }
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{server}/v1/chat/completions", json=body, headers=auth()) as res:
            lines = res.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any('"content"' in line for line in got)
        # Leaving the block closes the connection mid-stream.
    end = time.time() + 120
    while time.time() < end:
        health = httpx.get(f"{server}/health").json()["generations"]
        if health["cancelled"] > before and health["in_flight"] == 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the abandoned generation was not cancelled: {health}")
    after = httpx.post(
        f"{server}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        headers=auth(),
        timeout=60,
    )
    assert after.status_code == 200


def test_ask_endpoint_against_our_server(server):
    res = run_starchat(["ask", "--endpoint", server, "--api-key", KEY, "-t", "0", "-n", "12", "--json", "hi"])
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["model"] == "demo" and data["path"] == f"{server}/v1" and data["text"]
    assert data["stats"]["generated_tokens"] >= 1
    wrong = run_starchat(["ask", "--endpoint", server, "--api-key", "nope", "hi"])
    assert wrong.returncode == ExitCode.REMOTE and b"pass --api-key" in wrong.stderr


def test_endpoint_profile_from_the_config(server, isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "config.toml").write_text(
        f'[endpoints.box]\nurl = "{server}"\napi_key = "{KEY}"\nmodel = "demo"\n'
    )
    res = CliRunner().invoke(app, ["ask", "-e", "box", "-t", "0", "-n", "4", "--json", "hi"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"] == "demo"
    res = CliRunner().invoke(app, ["ask", "-e", "nobox", "hi"])
    assert res.exit_code == ExitCode.CONFIG and "profiles: box" in res.stderr


def test_unreachable_endpoint():
    res = CliRunner().invoke(app, ["ask", "--endpoint", f"http://127.0.0.1:{free_port()}", "hi"])
    assert res.exit_code == ExitCode.REMOTE and "is the server running?" in res.stderr


def recording_server(pieces: list[str]) -> tuple[LoopbackServer, list[dict]]:
    """A loopback OpenAI-style server that streams a fixed reply, and the request bodies it got.

    It ignores ``stop`` (as some servers do), so any cut in the printed text is the client's.
    """
    bodies: list[dict] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in pieces:
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())

    return LoopbackServer(Handler), bodies


def test_text_stop_is_sent_and_enforced_for_catalog_models():
    # The reply runs on into an invented next instruction, the "###" split over two chunks.
    pieces = ["def add(a, b):\n", "    return a + b\n\n", "#", "## Instruction\nmore"]
    server, bodies = recording_server(pieces)
    try:
        res = CliRunner().invoke(
            app, ["ask", "--endpoint", server.url, "-m", "starcoder2-instruct", "--raw", "add two numbers"]
        )
        assert res.exit_code == 0, res.output
        (body,) = bodies
        assert "###" in body["stop"] and "<|endoftext|>" in body["stop"]  # the catalog's stops, sent
        assert res.stdout.rstrip() == "def add(a, b):\n    return a + b"  # and cut here
        assert "Instruction" not in res.stdout and "#" not in res.stdout
        plain = CliRunner().invoke(app, ["ask", "--endpoint", server.url, "-m", "my-model", "--raw", "x"])
        assert plain.exit_code == 0 and "stop" not in bodies[-1]  # no catalog entry: no stops
        assert "## Instruction" in plain.stdout
    finally:
        server.close()


def test_serve_refuses_a_public_address_without_a_key():
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", str(free_port())])
    assert res.exit_code == ExitCode.CONFIG and "--api-key" in res.stderr


def test_serve_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "-m", "demo", "--port", str(port)])
    assert res.exit_code == 1 and "pick another --port" in res.stderr


def test_ask_endpoint_against_llama_cpp_python_server(demo_gguf, tmp_path):
    """A second engine no one here wrote: llama-cpp-python's own OpenAI-compatible server."""
    import llama_cpp.server.app  # noqa: F401  (llama-cpp-python[server] is in the test extra)

    port = free_port()
    # llama-cpp-python's server loads the model as starchat does on this machine: without
    # llama.cpp's AMX matmul where it crashes (engine/llamacpp/amx.py), else it dies on the first prompt
    launcher = (
        "import os, runpy, sys\n"
        "from starchat_cli.engine.llamacpp.amx import amx_status, load_mode\n"
        "load_mode(amx_status(os.environ.get('STARCHAT_AMX') or 'auto').load_mode).__enter__()\n"
        "sys.argv[0] = 'llama_cpp.server'\n"
        "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            launcher,
            "--model",
            str(demo_gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--verbose",
            "false",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/v1/models", proc)
        res = run_starchat(
            ["ask", "--endpoint", f"http://127.0.0.1:{port}", "-t", "0", "-n", "12", "--json", "Say hello."]
        )
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        assert data["text"] and Path(data["model"]).name == demo_gguf.name
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_ctrl_c_closes_in_flight_streams(demo_gguf, tmp_path):
    proc, base = start_server(env={"STARCHAT_HOME": str(tmp_path)})
    body = {
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 2500,
        "stream": True,
    }
    lines: list[str] = []
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=body) as res:
            for line in res.iter_lines():
                lines.append(line)
                if len(lines) == 6:
                    proc.send_signal(signal.SIGINT)  # Ctrl-C while the reply streams
    # The stream ended well before its 2,500 tokens, and properly: a finish chunk and [DONE].
    content = [ln for ln in lines if '"content"' in ln]
    assert len(content) < 2000
    assert lines[-1] == "" or lines[-1] == "data: [DONE]"
    assert "data: [DONE]" in lines
    proc.wait(timeout=60)
    assert proc.returncode == 0
    assert b"Traceback" not in proc.stderr.read()


@pytest.mark.anyio
async def test_chat_tui_on_a_remote_engine_saves_the_session(server):
    """Sessions work the same on the remote backend: the TUI talks to `starchat serve`."""
    from starchat_cli.chat.sessions import SessionStore
    from starchat_cli.engine.remote.engine import RemoteEngine
    from starchat_cli.tui.app import make_app
    from starchat_cli.tui.widgets import AssistantMessage

    engine = RemoteEngine(server, api_key=KEY)
    app = make_app(engine, model_name=engine.model, store=SessionStore())
    async with app.run_test(size=(100, 32)) as pilot:
        await say(pilot, "Write hello world in Python.", rounds=400)
        replies = [r.text for r in app.query(AssistantMessage)]
        assert len(replies) == 1 and replies[0].strip()
        saved = app.conversation.store.messages(app.conversation.session.id)
        assert [m.role for m in saved] == ["user", "assistant"]
        assert saved[1].content == replies[0]
        assert app.conversation.session.model == "demo"


def test_a_remote_chat_longer_than_the_servers_context_drops_its_oldest_turns(server):
    """/v1 refuses messages that fit only without their oldest turns; the remote engine (chat
    --endpoint) then asks again without the oldest pair, as a local chat fits its history, and
    counts what it left out. A latest question too long by itself stays an error."""
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message
    from starchat_cli.engine.remote.engine import RemoteEngine

    engine = RemoteEngine(server, api_key=KEY)
    history: list[Message] = []
    for i in range(40):
        history += [
            Message("user", f"Question {i}: " + "tell me about books " * 12),
            Message("assistant", "Books. " * 40),
        ]
    turns = [*history, Message("user", "Name one book.")]
    gen = engine.generate(turns, GenerationParams(max_tokens=4, temperature=0.0))
    assert "".join(gen).strip()
    assert 0 < gen.fit.dropped_turns < 40 and gen.stats.dropped_turns == gen.fit.dropped_turns
    head = int(gen.fit.messages[0].role == "system")  # the model's default system prompt, if any
    assert gen.fit.messages[-1].content == "Name one book." and gen.fit.messages[head].role == "user"
    assert len(gen.fit.messages) == head + 2 * (40 - gen.fit.dropped_turns) + 1
    with pytest.raises(StarchatError, match="400"):
        "".join(engine.generate([Message("user", "word " * 9000)], GenerationParams(max_tokens=4)))
