"""Ollama's API on `starchat serve`: the official `ollama` client against a real server on loopback.

One server with the demo model (SmolLM2, no FIM tokens) serves most tests; a second one
requires an API key. The NDJSON framing is read byte by byte with http.client.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import ollama
import pytest
from starlette.testclient import TestClient

from starchat_cli.core.errors import FimUnsupportedError
from starchat_cli.server.app import ServerConfig, make_app
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.servers import start_server, stop_server

KEY = "sekrit-ollama-key"


@pytest.fixture(scope="module")
def server():
    proc, base = start_server("--ctx", "1024")
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def keyed_server():
    proc, base = start_server("--ctx", "512", "--api-key", KEY)
    yield base
    stop_server(proc)


@pytest.fixture
def client(server: str) -> ollama.Client:
    return ollama.Client(host=server)


def test_version_and_root(server: str) -> None:
    version = httpx.get(f"{server}/api/version").json()["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)  # Copilot's minimum
    root = httpx.get(f"{server}/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert httpx.head(f"{server}/").status_code == 200


def test_tags_lists_the_served_model(client: ollama.Client, demo_gguf) -> None:
    models = client.list().models
    assert len(models) == 1
    m = models[0]
    assert m.model == "demo:latest"
    assert m.size == demo_gguf.stat().st_size
    assert isinstance(m.modified_at, datetime)
    assert m.digest and len(m.digest) == 64 and int(m.digest, 16) >= 0
    assert m.details.format == "gguf" and m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"
    assert m.details.parameter_size.endswith("M")


def test_show_and_ps(client: ollama.Client) -> None:
    shown = client.show("demo")
    assert shown.capabilities == ["completion"]  # no FIM tokens: no "insert"
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    assert shown.details.quantization_level == "Q4_1"
    assert "num_ctx 1024" in shown.parameters and "FROM " in shown.modelfile
    # Continue reads num_ctx from these lines, and gives up on any that does not match this.
    assert all(re.match(r'^(\S+)\s+((?:".*")|\S+)$', line) for line in shown.parameters.splitlines())
    assert ".Suffix" not in (shown.template or "")  # no FIM tokens: no FIM template
    assert isinstance(shown.modified_at, datetime)
    running = client.ps().models
    assert len(running) == 1
    assert running[0].model == "demo:latest"
    assert running[0].context_length == 1024
    assert running[0].size_vram == 0  # the test machine runs on the CPU
    assert running[0].expires_at is not None


def test_generate_not_streamed(client: ollama.Client) -> None:
    r = client.generate(
        model="demo", prompt="Say hello.", stream=False, options={"num_predict": 8, "seed": 1}
    )
    assert r.done is True and r.done_reason in ("stop", "length")
    assert r.response and r.model == "demo"
    assert 1 <= r.eval_count <= 8
    assert r.prompt_eval_count > 3  # the chat template wraps the prompt
    assert r.total_duration >= r.eval_duration > 0
    assert r.prompt_eval_duration > 0
    assert datetime.fromisoformat(r.created_at.replace("Z", "+00:00")).tzinfo is not None


def test_generate_streamed_joins_to_the_same_text(client: ollama.Client) -> None:
    opts = {"num_predict": 12, "seed": 7, "temperature": 0.0}
    whole = client.generate(model="demo:latest", prompt="Count to five.", stream=False, options=opts)
    parts = list(client.generate(model="demo:Q4_1", prompt="Count to five.", stream=True, options=opts))
    assert len(parts) >= 2
    assert all(p.done is False for p in parts[:-1]) and parts[-1].done is True
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].eval_count == whole.eval_count


def test_num_predict_is_exact_and_seed_repeats(client: ollama.Client) -> None:
    opts = {"num_predict": 5, "seed": 42, "temperature": 1.5, "top_p": 1.0}
    a = client.generate(model="demo", prompt="Write a long story about a dragon.", stream=False, options=opts)
    b = client.generate(model="demo", prompt="Write a long story about a dragon.", stream=False, options=opts)
    assert a.eval_count == 5 and a.done_reason == "length"
    assert a.response == b.response
    c = client.generate(
        model="demo", prompt="Write a long story about a dragon.", stream=False, options={**opts, "seed": 43}
    )
    d = client.generate(
        model="demo", prompt="Write a long story about a dragon.", stream=False, options={**opts, "seed": 44}
    )
    assert len({a.response, c.response, d.response}) > 1  # the seed matters at this temperature


def test_raw_prompt_is_sent_as_is(client: ollama.Client) -> None:
    r = client.generate(
        model="demo", prompt="def add(a, b):\n    return", raw=True, stream=False, options={"num_predict": 4}
    )
    templated = client.generate(
        model="demo", prompt="def add(a, b):\n    return", stream=False, options={"num_predict": 4}
    )
    assert r.prompt_eval_count < templated.prompt_eval_count  # no chat template, no system prompt


def test_chat_streamed_and_not(client: ollama.Client) -> None:
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What colour is the sky?"},
    ]
    opts = {"num_predict": 6, "seed": 3, "temperature": 0.0}
    whole = client.chat(model="demo", messages=messages, stream=False, options=opts)
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.done and whole.eval_count >= 1 and whole.done_reason in ("stop", "length")
    parts = list(client.chat(model="demo", messages=messages, stream=True, options=opts))
    assert parts[-1].done and parts[-1].message.content == ""
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_empty_prompt_only_loads(client: ollama.Client) -> None:
    r = client.generate(model="demo", prompt="", stream=False)
    assert r.done and r.done_reason == "load" and r.response == ""


def test_unknown_model_gets_the_served_model(client: ollama.Client) -> None:
    opts = {"num_predict": 2, "temperature": 0.0}
    r = client.generate(model="llama3", prompt="hi", stream=False, options=opts)
    assert r.done and r.model == "demo:latest" and r.eval_count >= 1
    hi = [{"role": "user", "content": "hi"}]
    parts = list(client.chat(model="demo:Q8_0", messages=hi, options=opts, stream=True))
    assert parts[-1].done and {p.model for p in parts} == {"demo:latest"}
    assert client.show("starchat2").details.format == "gguf"


def test_unknown_model_is_404_when_strict() -> None:
    c = fake_client(FakeEngine(name="fake"), strict_model=True)
    for path, body in (
        ("/api/generate", {"model": "llama3", "prompt": "hi", "stream": False}),
        ("/api/chat", {"model": "fake:q8_0", "messages": [{"role": "user", "content": "hi"}]}),
    ):
        r = c.post(path, json=body)
        assert r.status_code == 404 and r.json() == {"error": f"model '{body['model']}' not found"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"stream": "no"}, "stream"),
        ({"raw": 1}, "raw"),
        ({"prompt": 5}, "prompt"),
        ({"options": {"num_predict": "8"}}, "options.num_predict"),
        ({"options": {"num_predict": 2.5}}, "options.num_predict"),
        ({"options": {"temperature": True}}, "options.temperature"),
        ({"options": {"seed": "1"}}, "options.seed"),
        ({"options": {"stop": [1]}}, "options.stop"),
        ({"options": []}, "options"),
        ({"suffix": ["x"]}, "suffix"),
    ],
)
def test_wrong_types_are_400_naming_the_field(server: str, body: dict, field: str) -> None:
    r = httpx.post(f"{server}/api/generate", json={"model": "demo", "prompt": "hi", **body})
    assert r.status_code == 400
    assert f"'{field}'" in r.json()["error"]


def test_refused_features_say_why(server: str) -> None:
    cases = [
        ("/api/generate", {"prompt": "hi", "images": ["aGk="]}, "images"),
        ("/api/generate", {"prompt": "hi", "format": "yaml"}, "format"),  # "json" or a schema only
        ("/api/generate", {"prompt": "hi", "template": "{{ .Prompt }}"}, "template"),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
            "tools",
        ),
        ("/api/chat", {"messages": [{"role": "robot", "content": "hi"}]}, "robot"),
    ]
    for path, body, word in cases:
        r = httpx.post(f"{server}{path}", json={"model": "demo", **body})
        assert r.status_code == 400, (path, body)
        assert word in r.json()["error"]


def test_suffix_on_the_demo_model_is_a_clear_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="demo", prompt="def f(", suffix="\n    return x\n", stream=False)
    assert err.value.status_code == 400
    assert "does not support insert" in err.value.error and "starcoder2" in err.value.error


def test_ndjson_framing(server: str) -> None:
    url = urlparse(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    body = json.dumps({"model": "demo", "prompt": "Name three fruits.", "options": {"num_predict": 6}})
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type", "").startswith("application/x-ndjson")
    raw = resp.read().decode()
    conn.close()
    assert raw.endswith("\n")
    lines = raw[:-1].split("\n")
    objs = [json.loads(line) for line in lines]  # every line is exactly one JSON object
    assert len(objs) >= 2
    assert all(o["done"] is False and o["response"] for o in objs[:-1])
    last = objs[-1]
    assert last["done"] is True and last["response"] == "" and last["done_reason"] == "length"
    assert last["eval_count"] == 6 and 1 <= len(objs) - 1 <= 6  # a chunk holds one token or more
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
        "prompt_eval_count",
    ):
        assert isinstance(last[key], int) and last[key] >= 0, key
    assert last["total_duration"] >= last["eval_duration"] > 0
    assert "context" not in last


def test_api_key_is_required_when_set(keyed_server: str) -> None:
    anon = ollama.Client(host=keyed_server)
    for call in (anon.list, anon.ps, lambda: anon.generate(model="demo", prompt="hi", stream=False)):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 401 and "API key" in err.value.error
    assert httpx.get(f"{keyed_server}/api/version").status_code == 401
    assert httpx.get(f"{keyed_server}/").status_code == 200  # the probe says only that it runs
    keyed = ollama.Client(host=keyed_server, headers={"Authorization": f"Bearer {KEY}"})
    assert keyed.list().models[0].model == "demo:latest"
    r = keyed.generate(model="demo", prompt="hi", stream=False, options={"num_predict": 2})
    assert r.done and r.eval_count <= 2


# --- in-process, with a fake engine that fills in the middle --------------------------------------


class NoFimEngine(FakeEngine):
    """The fake engine as a model without FIM tokens: ``infill`` raises what the local engine raises."""

    def infill(self, prefix: str, suffix: str, params: Any = None, *, extra=(), path=None, cancel=None):
        raise FimUnsupportedError("no FIM tokens in this model: use starcoder2-3b")


def fake_client(engine: Any, **config: Any) -> TestClient:
    return TestClient(
        make_app(engine, ServerConfig(model_name="fake", **config)),
        raise_server_exceptions=False,
        base_url="http://127.0.0.1",
    )


def test_suffix_goes_to_infill():
    engine = FakeEngine(reply="x + y")
    c = fake_client(engine)
    body = {"model": "fake", "prompt": "def add(x, y):\n    return ", "suffix": "\n", "stream": False}
    r = c.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["response"] == "x + y" and r.json()["done"] is True
    assert engine.infill_calls == [("def add(x, y):\n    return ", "\n", [], None)]
    streamed = c.post("/api/generate", json={**body, "stream": True})
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert "".join(o["response"] for o in lines) == "x + y" and lines[-1]["done"] is True
    assert len(engine.infill_calls) == 2


def test_engine_errors_are_ollama_errors():
    c = fake_client(NoFimEngine())
    r = c.post("/api/generate", json={"model": "fake", "prompt": "a", "suffix": "b", "stream": False})
    assert r.status_code == 400 and r.json() == {"error": "no FIM tokens in this model: use starcoder2-3b"}
    r = c.post("/api/generate", json={"model": "fake", "prompt": "a", "suffix": "b"})  # streamed
    assert r.status_code == 400 and "starcoder2-3b" in r.json()["error"]


def test_unknown_route_and_model_names():
    c = fake_client(FakeEngine(name="fake"), strict_model=True)
    assert c.post("/api/show", json={"name": "fake"}).status_code == 200  # Continue's field
    for name in ("fake", "fake:latest", "FAKE"):
        assert c.post("/api/show", json={"model": name}).status_code == 200, name
    for name in ("fake:7b", "other", "other:latest"):
        r = c.post("/api/show", json={"model": name})
        assert r.status_code == 404 and r.json() == {"error": f"model '{name}' not found"}
    assert c.post("/api/show", json={}).json() == {"error": "model is required"}
    r = c.post("/api/pull", json={"model": "fake"})
    assert r.status_code == 501 and "`starchat pull MODEL`" in r.json()["error"]
    r = c.post("/api/frobnicate", json={})
    assert r.status_code == 404 and "/api/frobnicate is not part of" in r.json()["error"]
    assert c.get("/api/generate").status_code == 405  # a known route keeps its methods


def test_insert_capability_from_the_vocabulary(tmp_path):
    import gguf
    import numpy as np

    from starchat_cli.server.ollama_model import ModelFacts

    def write(name: str, tokens: list[str]):
        path = tmp_path / name
        w = gguf.GGUFWriter(str(path), "starcoder2")
        w.add_context_length(256)
        w.add_token_list(tokens)
        w.add_tensor("token_embd.weight", np.ones((len(tokens), 4), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    base = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
    words = [f"w{i}" for i in range(100)]  # past the 64 entries gguf_info keeps
    with_fim = ModelFacts.read(str(write("fim.gguf", base + words)))
    assert with_fim.capabilities() == ["completion", "insert"]
    assert ".Suffix" in with_fim.template  # how Continue decides that a model fills in the middle
    assert with_fim.family == "starcoder2" and with_fim.model_info["starcoder2.context_length"] == 256
    without = ModelFacts.read(str(write("plain.gguf", ["<|endoftext|>", "<fim_prefix>"] + words)))
    assert without.capabilities() == ["completion"]
    assert with_fim.digest != without.digest and len(with_fim.digest) == 64


def test_a_client_that_goes_away_stops_its_generation(server: str) -> None:
    before = httpx.get(f"{server}/health").json()["generations"]["cancelled"]
    url = urlparse(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    body = json.dumps(
        {"model": "demo", "prompt": "Write a very long essay.", "options": {"num_predict": 2000}}
    )
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert json.loads(resp.readline())["done"] is False
    conn.sock.close()  # gone mid-stream
    conn.close()
    for _ in range(200):
        counts = httpx.get(f"{server}/health").json()["generations"]
        if counts["cancelled"] > before and counts["in_flight"] == 0:
            break
        time.sleep(0.1)
    assert counts["cancelled"] == before + 1 and counts["in_flight"] == 0


def test_chat_and_show_types_are_checked():
    c = fake_client(FakeEngine(name="fake"))
    cases = [
        ("/api/chat", {"model": "fake", "messages": "hi"}, "'messages'"),
        (
            "/api/chat",
            {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": 0},
            "'stream'",
        ),
        ("/api/chat", {"model": "fake", "messages": [], "keep_alive": True}, "'keep_alive'"),
        ("/api/chat", {"model": "fake", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ("/api/show", {"model": 7}, "'model'"),
        ("/api/generate", {"model": "fake", "prompt": "x", "options": {"top_k": 1.5}}, "'options.top_k'"),
        (
            "/api/generate",
            {"model": "fake", "prompt": "x", "options": {"num_predict": 0}},
            "'options.num_predict'",
        ),
    ]
    for path, body, field in cases:
        r = c.post(path, json=body)
        assert r.status_code == 400 and field in r.json()["error"], (path, body, r.text)
    ok = c.post(
        "/api/generate",
        json={"model": "fake", "prompt": "x", "keep_alive": "5m", "options": {"num_predict": -1}},
    )
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/x-ndjson")
