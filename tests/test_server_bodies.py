"""Request bodies no route may choke on, over real HTTP (uvicorn on loopback, the fake engine).

Python's json reads ``1e400`` as ``inf``, and a body nested 100,000 levels deep as a
RecursionError: both used to be a 500. They are a 400 in the route's own error shape
(OpenAI's ``{"error": {"message", "param", ...}}`` on ``/v1/*`` and ``/infill``, Ollama's
``{"error": "..."}`` on ``/api/*``), and nothing is generated. ``/infill`` checks types as
strictly as the OpenAI routes: ``"stream": "false"`` is a 400, not a stream.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from starchat_cli.server.body import MAX_DEPTH, parse_json
from starchat_cli.server.errors import APIError

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
OLLAMA_CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": False}
OLLAMA_GENERATE = {"model": "fake", "prompt": "hi", "stream": False}
INFILL = {"input_prefix": "def f():\n", "input_suffix": "\n", "n_predict": 3}
JSON = {"Content-Type": "application/json"}
ROUTES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"prompt": "hi", "max_tokens": 3},
    "/infill": INFILL,
    "/api/generate": OLLAMA_GENERATE,
    "/api/chat": OLLAMA_CHAT,
    "/api/show": {"model": "fake"},
}


def with_number(body: dict[str, Any], path: str, number: str) -> str:
    """``body`` as JSON text with the raw JSON number ``number`` at ``path`` ("options.seed")."""
    marker = "__NUMBER__"
    data = json.loads(json.dumps(body))
    *outer, last = path.split(".")
    target = data
    for key in outer:
        target = target.setdefault(key, {})
    target[last] = marker
    return json.dumps(data).replace(f'"{marker}"', number)


def assert_error_shape(path: str, body: Any) -> str:
    """The route's error shape; its message."""
    if path.startswith("/api/"):
        assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str), body
        return body["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/generate", "options.num_predict"),
        ("/api/generate", "options.seed"),
        ("/api/generate", "options.top_k"),
        ("/api/generate", "options.temperature"),
        ("/api/generate", "options.num_ctx"),
        ("/api/generate", "options.repeat_penalty"),  # an option starchat ignores
        ("/api/generate", "keep_alive"),
        ("/api/chat", "options.num_predict"),
        ("/api/chat", "options.seed"),
        ("/v1/chat/completions", "max_tokens"),
        ("/v1/chat/completions", "seed"),
        ("/v1/chat/completions", "temperature"),
        ("/v1/chat/completions", "presence_penalty"),  # typed, not used
        ("/v1/chat/completions", "logit_bias.50256"),
        ("/v1/completions", "top_p"),
        ("/v1/completions", "best_of"),
        ("/infill", "n_predict"),
        ("/infill", "top_k"),
        ("/infill", "seed"),
        ("/infill", "n_indent"),
        ("/infill", "t_max_predict_ms"),
    ],
)
@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_a_number_out_of_float_range_is_a_400_naming_the_field(web, path, field, number):
    before = web.generations()
    status, _, body = web.request("POST", path, with_number(ROUTES[path], field, number), JSON)
    assert status == 400, body
    message = assert_error_shape(path, body)
    assert f"'{field}'" in message and "out of range" in message
    if not path.startswith("/api/"):
        assert body["error"]["param"] == field.split(".")[0]
    assert web.generations() == before


def test_huge_whole_numbers_are_range_checked(web):
    """Integers too big for any field are a 400 on the field's range, not an overflow."""
    huge = "1" + "0" * 400
    for path, field in (
        ("/api/generate", "options.num_predict"),
        ("/api/generate", "options.seed"),
        ("/api/generate", "options.top_k"),
        ("/v1/chat/completions", "seed"),
        ("/infill", "n_predict"),
    ):
        for number in (huge, "-" + huge, "1e300"):
            status, _, body = web.request("POST", path, with_number(ROUTES[path], field, number), JSON)
            assert status == 400, (path, field, number, body)
            assert field.rsplit(".", 1)[-1] in assert_error_shape(path, body)


@pytest.mark.parametrize("path", list(ROUTES))
def test_a_body_nested_100000_deep_is_a_400_on_every_route(web, path):
    deep = "[" * 100_000 + "]" * 100_000
    key = "messages" if "chat" in path else "input_prefix" if path == "/infill" else "prompt"
    status, _, body = web.request("POST", path, f'{{"{key}": {deep}}}', JSON)
    assert status == 400, body
    assert "nested too deeply" in assert_error_shape(path, body)


def test_nesting_up_to_the_limit_is_read():
    """MAX_DEPTH levels of arrays and objects pass (the top object is one); one more does not."""
    inner = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_json(f'{{"a": {inner}}}'.encode())["a"]
    with pytest.raises(APIError) as info:
        parse_json(f'{{"a": [{inner}]}}'.encode())
    assert info.value.status == 400 and "nested too deeply" in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", "false"),
        ("stream", 0),
        ("cache_prompt", "yes"),
        ("n_predict", "5"),
        ("n_predict", 2.5),
        ("temperature", "0"),
        ("top_k", True),
        ("t_max_predict_ms", "1000"),
        ("n_indent", [4]),
        ("input_suffix", 1),
        ("prompt", {"text": "x"}),
        ("response_fields", "content"),
        ("stop", 5),
    ],
)
def test_infill_checks_types_as_the_openai_routes_do(web, field, value):
    before = web.generations()
    status, headers, body = web.request("POST", "/infill", json.dumps({**INFILL, field: value}), JSON)
    assert status == 400 and headers["content-type"] == "application/json", body
    assert body["error"]["param"] == field and body["error"]["code"] == "invalid_type", body
    assert body["error"]["message"].startswith(f"Invalid type for '{field}': expected ")
    assert web.generations() == before


def test_infill_extra_chunks_are_typed_and_a_json_false_does_not_stream(web):
    status, _, body = web.request(
        "POST", "/infill", json.dumps({**INFILL, "input_extra": [{"filename": "a.py", "text": 3}]}), JSON
    )
    assert status == 400 and body["error"]["param"] == "input_extra", body
    assert "'input_extra[0].text'" in body["error"]["message"]
    status, headers, body = web.request("POST", "/infill", json.dumps({**INFILL, "stream": False}), JSON)
    assert status == 200 and headers["content-type"] == "application/json"
    assert isinstance(body["content"], str) and body["stop"] is True


def test_the_system_fingerprint_follows_what_computes_the_replies():
    from dataclasses import replace

    from starchat_cli.engine.contract import EngineInfo
    from starchat_cli.server.sse import ReplyHead, fingerprint

    info = EngineInfo(name="demo", location="/m/demo.gguf", loaded=True, n_ctx=4096, flash_attn=True)
    fp = fingerprint(info)
    assert fp is not None and fp.startswith("b") and fp == fingerprint(replace(info, warnings=("x",)))
    for changed in (
        replace(info, n_ctx=8192),
        replace(info, flash_attn=False),
        replace(info, location="/m/b.gguf"),
    ):
        assert fingerprint(changed) not in (None, fp)
    assert fingerprint(replace(info, loaded=False)) is None
    assert fingerprint(replace(info, remote=True)) is None
    assert ReplyHead.new("chat", "demo", info).fields("chat.completion")["system_fingerprint"] == fp
    assert ReplyHead.new("chat", "demo").fields("chat.completion")["system_fingerprint"] is None
