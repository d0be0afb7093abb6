"""The server's pieces on their own: request checks, turn merging, errors, auth, the bridge.

Everything runs in-process (Starlette's TestClient calls the ASGI app directly) with the
fake engine: no sockets, no model.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from starchat_cli.core.errors import ContextOverflowError, InputError, ModelLoadError, StarchatError
from starchat_cli.engine.contract import Generation
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import Message, merge_turns
from starchat_cli.server import auth
from starchat_cli.server.app import ServerConfig, make_app
from starchat_cli.server.bridge import Bridge
from starchat_cli.server.errors import APIError, error_response, from_engine_error
from starchat_cli.server.requests import (
    chat_turns,
    check_model,
    completion_prompts,
    parse_completion,
    parse_json,
    sampling_params,
)

from .helpers.fake_engine import FakeEngine

U = [{"role": "user", "content": "hi"}]
KEY = "sekrit"
JSON = {"Content-Type": "application/json"}


def config(**kw: Any) -> ServerConfig:
    return ServerConfig(**{"model_name": "fake", "aliases": ("alias",), "created": 7, **kw})


def api_error(fn, *args: Any) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args)
    return info.value


# --- merge_turns ------------------------------------------------------------------------------


def test_merge_turns_joins_runs_of_one_role_with_a_blank_line():
    turns = [
        Message("user", "a"),
        Message("user", "b"),
        Message("assistant", "c"),
        Message("assistant", "d"),
        Message("assistant", "e"),
        Message("user", "f"),
    ]
    assert merge_turns(turns) == [
        Message("user", "a\n\nb"),
        Message("assistant", "c\n\nd\n\ne"),
        Message("user", "f"),
    ]
    assert turns[0] == Message("user", "a")  # the input is left alone


def test_merge_turns_keeps_alternating_turns_and_leading_assistants_unless_asked():
    alternating = [Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    assert merge_turns(alternating) == alternating
    assert merge_turns([]) == []
    leading = [Message("assistant", "x"), Message("assistant", "y"), Message("user", "q")]
    assert merge_turns(leading) == [Message("assistant", "x\n\ny"), Message("user", "q")]
    assert merge_turns(leading, from_first_user=True) == [Message("user", "q")]
    assert merge_turns(iter([Message("assistant", "only")]), from_first_user=True) == []


def test_the_tui_normalizes_turns_with_the_same_helper():
    from starchat_cli.chat.conversation import normalize_turns

    turns = [Message("assistant", "x"), Message("user", "a"), Message("user", "b")]
    assert normalize_turns(turns) == merge_turns(turns, from_first_user=True) == [Message("user", "a\n\nb")]


# --- sampling parameters ----------------------------------------------------------------------


def test_sampling_defaults_come_from_the_config():
    assert sampling_params({}, config(max_tokens_limit=300)) == GenerationParams(
        max_tokens=300, temperature=config().default_temperature, top_p=config().default_top_p
    )
    cfg = config(default_max_tokens=50, default_temperature=0.7, default_top_p=0.5)
    params = sampling_params({"temperature": None, "stop": None}, cfg)
    assert (params.max_tokens, params.temperature, params.top_p, params.seed, params.stop) == (
        50,
        0.7,
        0.5,
        None,
        (),
    )


def test_sampling_values_are_converted():
    params = sampling_params(
        {"max_tokens": 12.0, "temperature": 1, "top_p": 1, "seed": 2**32 - 1, "stop": "###"}, config()
    )
    assert params.max_tokens == 12 and type(params.max_tokens) is int
    assert params.temperature == 1.0 and type(params.temperature) is float
    assert params.seed == 2**32 - 1 and params.stop == ("###",)
    assert sampling_params({"stop": ["a", "b"]}, config()).stop == ("a", "b")
    assert sampling_params({"stop": ""}, config()).stop == ()


def test_max_completion_tokens_wins_over_max_tokens():
    assert sampling_params({"max_completion_tokens": 9, "max_tokens": 99}, config()).max_tokens == 9
    err = api_error(sampling_params, {"max_completion_tokens": 0, "max_tokens": 5}, config())
    assert err.param == "max_tokens" and "'max_tokens'" in err.message  # reported under the usual name


@pytest.mark.parametrize(
    "key, value",
    [
        ("max_tokens", 0),
        ("max_tokens", 101),
        ("max_tokens", 2.5),
        ("max_tokens", True),
        ("max_tokens", "10"),
        ("temperature", -0.1),
        ("temperature", 5.01),
        ("temperature", "1"),
        ("temperature", float("nan")),
        ("top_p", 1.01),
        ("top_p", [0.5]),
        ("seed", -1),
        ("seed", 2**32),
        ("seed", 1.5),
        ("stop", ["s"] * 9),
        ("stop", [1]),
        ("stop", 5),
        ("stop", {"a": "b"}),
    ],
)
def test_bad_sampling_values_are_400s_naming_the_parameter(key, value):
    err = api_error(sampling_params, {key: value}, config(max_tokens_limit=100))
    assert (err.status, err.type, err.param) == (400, "invalid_request_error", key)


# --- messages, prompt, model ------------------------------------------------------------------


def test_chat_turns_split_the_system_prompt_and_merge_runs():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "developer", "content": "D"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": [{"type": "text", "text": "d"}, {"type": "text", "text": "e"}]},
    ]
    turns, system = chat_turns({"messages": messages})
    assert system == "S\n\nD"
    assert turns == [Message("user", "a\n\nb"), Message("assistant", "c"), Message("user", "de")]
    assert chat_turns({"messages": U}) == ([Message("user", "hi")], None)


def test_chat_turns_keep_late_system_messages_in_place_and_a_final_assistant_turn():
    """aider's layout (a trailing system reminder) and a prefill: the engine's format places them."""
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": None},  # an earlier turn that only called tools: empty
        {"role": "developer", "content": "N1"},
        {"role": "system", "content": "N2"},
        {"role": "user", "content": "b"},
        {"role": "system", "content": "reminder"},
        {"role": "assistant", "content": [{"type": "text", "text": "```"}, {"type": "text", "text": "py"}]},
    ]
    turns, system = chat_turns({"messages": messages})
    assert system == "S"
    assert turns == [
        Message("user", "a"),
        Message("assistant", ""),
        Message("system", "N1\n\nN2"),
        Message("user", "b"),
        Message("system", "reminder"),
        Message("assistant", "```py"),
    ]


@pytest.mark.parametrize(
    "messages, words",
    [
        (None, "non-empty list"),
        ([], "non-empty list"),
        ("hi", "non-empty list"),
        (["hi"], "messages[0] must be an object"),
        ([{"role": "user", "content": 3}], "Invalid type for 'messages[0].content'"),
        ([{"role": "user"}], "messages[0].content must be a string or a list of text parts"),
        ([{"role": "system", "content": None}], "messages[0].content must be a string"),
        ([*U, {"role": "tool", "content": "x"}], "messages[1].role 'tool' is not supported: StarChat models"),
        ([*U, {"role": "function", "content": None}], "messages[1].role 'function' is not supported"),
        ([*U, {"role": "critic", "content": "x"}], "messages[1].role 'critic' is not supported (system"),
        ([{"content": "x"}], "messages[0].role is required"),
        ([{"role": 1, "content": "x"}], "Invalid type for 'messages[0].role'"),
        ([{"role": "user", "content": "x", "name": 5}], "Invalid type for 'messages[0].name'"),
        ([{"role": "user", "content": {"text": "x"}}], "Invalid type for 'messages[0].content'"),
        ([{"role": "user", "content": ["junk"]}], "Invalid type for 'messages[0].content[0]'"),
        ([{"role": "user", "content": [None]}], "messages[0].content[0] must be an object"),
        ([{"role": "user", "content": [{"type": 1}]}], "Invalid type for 'messages[0].content[0].type'"),
        ([{"role": "user", "content": [{"type": "text", "text": 2}]}], "'messages[0].content[0].text'"),
        (
            [*U, {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url"}]}],
            "messages[1].content[1].type 'image_url' is not supported",
        ),
        ([{"role": "assistant", "content": "x"}], "must start with a user message"),
        (
            [{"role": "system", "content": "S"}, {"role": "assistant", "content": "x"}],
            "must start with a user",
        ),
        ([{"role": "system", "content": "x"}], "needs a user message"),
        ([*U, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}], "two assistant"),
    ],
)
def test_bad_messages_are_400s(messages, words):
    err = api_error(chat_turns, {"messages": messages})
    assert err.status == 400 and err.param == "messages" and words in err.message


def test_completion_prompts_take_every_form_openai_takes():
    assert completion_prompts({"prompt": "def f():"}) == ("def f():",)
    assert completion_prompts({"prompt": ["def f():"]}) == ("def f():",)
    assert completion_prompts({"prompt": ["a", "b"]}) == ("a", "b")
    assert completion_prompts({"prompt": [3, 0, 7]}) == ((3, 0, 7),)
    assert completion_prompts({"prompt": [[3], [4, 5]]}) == ((3,), (4, 5))
    assert completion_prompts({"prompt": [[3], "a"]}) == ((3,), "a")
    bads = (None, 3, [], ["a", 3], [-1], [1.5], [True], [[1], []], [[1, "a"]], [[-2]], ["a"] * 65)
    for bad in bads:
        err = api_error(completion_prompts, {"prompt": bad})
        assert err.status == 400 and err.param == "prompt"


def test_check_model_answers_any_name_with_the_served_model_and_notes_it_once():
    notes: list[str] = []
    cfg = config(notify=notes.append)
    for ok in ({}, {"model": None}, {"model": "fake"}):
        assert check_model(ok, cfg) == "fake"
    assert check_model({"model": "alias"}, cfg) == "alias"  # a name of the served model stays
    assert notes == []  # its own names are not news
    for _ in range(3):
        assert check_model({"model": "gpt-4o"}, cfg) == "fake"
    assert check_model({"model": "gpt-4o-mini"}, cfg) == "fake"
    assert len(notes) == 2 and "'gpt-4o'" in notes[0] and "'gpt-4o-mini'" in notes[1]


def test_check_model_strict_is_a_404():
    strict = config(strict_model=True)
    assert check_model({"model": "alias"}, strict) == "alias"
    err = api_error(check_model, {"model": "gpt-4o"}, strict)
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    assert "'gpt-4o'" in err.message and "'fake'" in err.message


def test_parse_completion_checks_in_order_and_reads_the_flags():
    # The model is checked before the sampling values, those before the messages.
    strict = config(strict_model=True)
    assert api_error(parse_completion, {"model": "x", "max_tokens": 0}, strict, "chat").status == 404
    assert (
        api_error(parse_completion, {"max_tokens": 0, "messages": []}, config(), "chat").param == "max_tokens"
    )
    req = parse_completion(
        {"messages": U, "stream": True, "stream_options": {"include_usage": True}}, config(), "chat"
    )
    assert req.kind == "chat" and req.turns == (Message("user", "hi"),) and req.system is None
    assert req.stream is True and req.include_usage is True
    text = parse_completion({"prompt": "p", "messages": "ignored"}, config(), "text")
    assert text.prompts == ("p",) and text.turns == () and not text.stream and not text.include_usage


def test_max_tokens_defaults_to_openais_16_on_completions_only():
    """OpenAI's documented default for the legacy completions endpoint; chat runs to its end of turn."""
    assert parse_completion({"prompt": "p"}, config(), "text").params.max_tokens == 16
    assert parse_completion({"prompt": "p", "max_tokens": 40}, config(), "text").params.max_tokens == 40
    assert parse_completion({"prompt": "p"}, config(max_tokens_limit=10), "text").params.max_tokens == 10
    assert parse_completion({"prompt": "p"}, config(default_max_tokens=50), "text").params.max_tokens == 50
    chat = parse_completion({"messages": U}, config(max_tokens_limit=3000), "chat")
    assert chat.params.max_tokens == 3000  # the limit only: the end of the turn or the context stops it
    err = api_error(parse_completion, {"prompt": [1], "suffix": "s"}, config(), "text")
    assert err.param == "suffix" and "text prompt" in err.message


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{nope", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"temperature": NaN}', "NaN is not JSON"),
        (b'{"max_tokens": Infinity}', "Infinity is not JSON"),
    ],
)
def test_parse_json_rejects_what_is_not_a_json_object(body, message):
    err = api_error(parse_json, body)
    assert (err.status, err.code) == (400, "invalid_json") and message in err.message
    assert parse_json(b'{"a": 1}') == {"a": 1}


# --- errors and auth --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, status, type_, code",
    [
        (ContextOverflowError("too long"), 400, "invalid_request_error", "context_length_exceeded"),
        (InputError("empty"), 400, "invalid_request_error", None),
        (ModelLoadError("broken"), 500, "server_error", None),
        (StarchatError("boom"), 500, "server_error", None),
    ],
)
def test_engine_errors_map_to_api_errors(exc, status, type_, code):
    err = from_engine_error(exc)
    assert (err.status, err.type, err.code, err.message) == (status, type_, code, exc.message)
    res = error_response(err, "/v1/chat/completions")
    assert res.status_code == status
    assert json.loads(res.body) == {
        "error": {"message": exc.message, "type": type_, "param": None, "code": code}
    }


def test_bearer_matches_only_the_bearer_scheme_and_the_exact_key(monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert auth.bearer_matches(f"Bearer {KEY}", KEY)
    assert auth.bearer_matches(f"bearer  {KEY} ", KEY)
    assert compared == [(KEY.encode(), KEY.encode())] * 2  # constant-time comparison
    for header in ("", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer ", f"Token {KEY}"):
        assert not auth.bearer_matches(header, KEY), header


# --- the app, in-process ----------------------------------------------------------------------


def client(engine: Any = None, **kw: Any) -> TestClient:
    app = make_app(engine or FakeEngine("one two three"), config(**kw))
    # A loopback Host: the app refuses TestClient's default "testserver" (server/guard.py).
    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def test_every_route_but_health_needs_the_key():
    c = client(api_key=KEY)
    calls = [
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", {"messages": U}),
        ("POST", "/v1/completions", {"prompt": "x"}),
    ]
    for method, path, body in calls:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY}"}):
            res = c.request(method, path, json=body, headers=headers)
            assert res.status_code == 401, (path, headers)
            assert res.json()["error"] == {
                "message": "invalid or missing API key: send 'Authorization: Bearer KEY'",
                "type": "authentication_error",
                "param": None,
                "code": "invalid_api_key",
            }
        ok = c.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200, path
    assert c.get("/health").status_code == 200


def test_models_and_health_bodies():
    c = client()
    assert c.get("/v1/models").json() == {
        "object": "list",
        "data": [{"id": "fake", "object": "model", "created": 7, "owned_by": "starchat"}],
    }
    assert c.get("/health").json() == {
        "status": "ok",
        "model": "fake",
        "loaded": True,
        "generations": {"in_flight": 0, "completed": 0, "cancelled": 0},
    }
    c.post("/v1/chat/completions", json={"messages": U})
    assert c.get("/health").json()["generations"] == {"in_flight": 0, "completed": 1, "cancelled": 0}


def test_unknown_routes_and_methods_have_the_error_shape():
    c = client()
    res = c.get("/v1/nothing")
    assert res.status_code == 404
    assert res.json() == {
        "error": {
            "message": "no route GET /v1/nothing: starchat serve's OpenAI API is /v1/models, "
            "/v1/chat/completions and /v1/completions",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }
    res = c.get("/v1/chat/completions")
    assert res.status_code == 405 and res.json()["error"]["code"] == "method_not_allowed"
    assert res.json()["error"]["message"] == "GET is not allowed on /v1/chat/completions"
    res = c.get("/nothing")  # outside /v1: Starlette's own 404, in OpenAI's shape
    assert res.status_code == 404 and res.json()["error"]["message"] == "no route GET /nothing"


def test_a_body_over_the_limit_is_413_declared_or_streamed():
    c = client(max_body_bytes=100)
    big = json.dumps({"messages": U, "pad": "x" * 200}).encode()
    declared = c.post("/v1/chat/completions", content=big, headers=JSON)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit holds while reading
        yield big[:60]
        yield big[60:]

    streamed = c.post("/v1/chat/completions", content=chunks(), headers=JSON)
    assert (
        streamed.status_code == 413 and streamed.json()["error"]["message"] == "request body over 100 bytes"
    )
    assert c.post("/v1/chat/completions", json={"messages": U}).status_code == 200


def test_a_whole_chat_reply_and_a_whole_text_reply():
    engine = FakeEngine("one two three")
    c = client(engine)
    body = c.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "system", "content": "S"}, *U, *U], "model": "alias"},
    ).json()
    assert engine.calls[-1] == ([Message("user", "hi\n\nhi")], "S")
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "fake"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "one two three"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3
    text = c.post("/v1/completions", json={"prompt": "p", "max_tokens": 2}).json()
    assert text["id"].startswith("cmpl-") and text["object"] == "text_completion"
    assert text["choices"] == [{"index": 0, "text": "one two ", "logprobs": None, "finish_reason": "length"}]


def events(res) -> list[Any]:
    lines = [line for line in res.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def test_a_streamed_chat_reply():
    res = client().post(
        "/v1/chat/completions",
        json={"messages": U, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
    assert res.headers["cache-control"] == "no-cache"
    got = events(res)
    assert got[-1] == "[DONE]"
    chunks, usage = got[:-2], got[-2]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "one "},
        {"content": "two "},
        {"content": "three"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, None, "stop"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3


def test_a_streamed_text_reply_without_usage():
    got = events(client().post("/v1/completions", json={"prompt": "p", "stream": True, "max_tokens": 2}))
    assert got[-1] == "[DONE]" and all(e["object"] == "text_completion" for e in got[:-1])
    assert [e["choices"][0]["text"] for e in got[:-1]] == ["one ", "two ", ""]
    assert got[-2]["choices"][0]["finish_reason"] == "length" and "usage" not in got[-2]


class FailingEngine(FakeEngine):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def generate(self, *args: Any, **kw: Any) -> Generation:
        raise self.exc


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    "exc, status, code",
    [
        (ContextOverflowError("too long"), 400, "context_length_exceeded"),
        (InputError("bad"), 400, None),
        (StarchatError("boom"), 500, None),
        (RuntimeError("bug"), 500, None),
    ],
)
def test_engine_failures_become_http_errors_not_broken_streams(exc, status, code, stream):
    res = client(FailingEngine(exc)).post("/v1/chat/completions", json={"messages": U, "stream": stream})
    assert res.status_code == status and res.headers["content-type"] == "application/json"
    error = res.json()["error"]
    assert error["code"] == code
    assert error["message"] == (
        exc.message if isinstance(exc, StarchatError) else "internal error: RuntimeError"
    )


def test_shutdown_sets_the_event_and_calls_the_hook():
    called: list[str] = []
    app = make_app(FakeEngine(), config(), on_shutdown=lambda: called.append("bye"))
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/health").status_code == 200
        assert not app.state.shutting_down.is_set() and called == []
    assert app.state.shutting_down.is_set() and called == ["bye"]


# --- the bridge -------------------------------------------------------------------------------


async def settle() -> None:
    """Keep the event loop open until the bridge's worker threads end (they post to it)."""
    for thread in threading.enumerate():
        if thread.name == "starchat-generate":
            await asyncio.to_thread(thread.join, 10)


def wait_idle(bridge: Bridge) -> dict[str, int]:
    end = time.time() + 10
    while bridge.counts()["in_flight"] and time.time() < end:
        time.sleep(0.01)
    return bridge.counts()


def test_run_blocking_counts_and_stops_on_shutdown():
    bridge = Bridge()
    engine = FakeEngine("a b c d")
    text, gen = asyncio.run(bridge.run_blocking(lambda: engine.generate([Message("user", "x")])))
    assert text == "a b c d" and gen.stats.stop_reason == "stop"
    assert bridge.counts() == {"in_flight": 0, "completed": 1, "cancelled": 0}
    bridge.shutting_down.set()
    text, gen = asyncio.run(bridge.run_blocking(lambda: engine.generate([Message("user", "x")])))
    assert text == "a " and gen.stats.stop_reason == "cancelled"
    assert bridge.counts() == {"in_flight": 0, "completed": 1, "cancelled": 1}


def test_a_stream_left_early_cancels_its_generation():
    bridge = Bridge()
    engine = FakeEngine(" ".join(["w"] * 50), hold_after=2)

    async def take_one() -> tuple[str, threading.Event]:
        items, cancel = bridge.stream_chunks(lambda: engine.generate([Message("user", "x")]))
        first = await items.__anext__()
        await items.aclose()  # the client went away
        assert cancel.is_set()
        engine.release.set()
        await settle()
        return first, cancel

    first, cancel = asyncio.run(take_one())
    assert first == "w " and cancel.is_set()
    assert wait_idle(bridge) == {"in_flight": 0, "completed": 0, "cancelled": 1}


def test_a_stream_yields_the_chunks_then_the_generation_and_raises_thread_errors():
    bridge = Bridge()

    async def drain(start) -> list[Any]:
        items, _ = bridge.stream_chunks(start)
        try:
            return [item async for item in items]
        finally:
            await settle()

    got = asyncio.run(drain(lambda: FakeEngine("a b").generate([Message("user", "x")])))
    assert got[:2] == ["a ", "b"] and isinstance(got[2], Generation) and len(got) == 3
    with pytest.raises(InputError, match="nope"):
        asyncio.run(drain(lambda: FailingEngine(InputError("nope")).generate([])))
    assert wait_idle(bridge) == {"in_flight": 0, "completed": 1, "cancelled": 0}


# --- strict JSON types --------------------------------------------------------------------------

# One value of each JSON type; 2.5 is a number with a fraction, 3.0 one without.
SAMPLES: dict[str, Any] = {
    "boolean": False,
    "integer": 3,
    "decimal": 2.5,
    "string": "false",
    "array": ["x"],
    "object": {"x": 1},
}


def wrong_types() -> list[Any]:
    """(kind, field path, bad value) for every typed field, nested ones too, from the tables."""
    from starchat_cli.server.requests import FIELD_TYPES, NESTED_TYPES

    fits = {
        "boolean": {"boolean"},
        "integer": {"integer"},
        "number": {"integer", "decimal"},
        "string": {"string"},
        "array": {"array"},
        "object": {"object"},
    }
    cases = []
    for kind, fields in FIELD_TYPES.items():
        paths = [(key, allowed) for key, allowed in fields.items()]
        paths += [
            (f"{key}.{inner}", allowed)
            for key, nested in NESTED_TYPES.items()
            if key in fields
            for inner, allowed in nested.items()
        ]
        for path, allowed in paths:
            ok = set().union(*(fits[t] for t in allowed))
            for name, value in SAMPLES.items():
                if name not in ok:
                    cases.append(pytest.param(kind, path, value, id=f"{kind}-{path}-{name}"))
    return cases


def body_with(kind: str, path: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": U} if kind == "chat" else {"prompt": "p"}
    outer, _, inner = path.partition(".")
    body[outer] = {inner: value} if inner else value
    return body


@pytest.mark.parametrize("kind, path, value", wrong_types())
def test_every_field_of_the_wrong_type_is_a_400_naming_it(kind, path, value):
    route = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    engine = FakeEngine("one two three")
    res = client(engine).post(route, json=body_with(kind, path, value))
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    assert f"Invalid type for '{path}'" in error["message"] and error["code"] == "invalid_type"
    assert error["param"] == path.partition(".")[0]
    assert engine.calls == []  # nothing ran


def test_the_type_table_covers_the_fields_openai_clients_send():
    # A hand-written list, so a field dropped from the table fails here (and not silently above).
    cases = [
        ("chat", "stream", "false", "expected a boolean, but got a string"),
        ("chat", "stream", 0, "expected a boolean, but got an integer"),
        ("chat", "max_tokens", "10", "expected an integer, but got a string"),
        ("chat", "max_tokens", 2.5, "expected an integer, but got a decimal number"),
        ("chat", "max_completion_tokens", True, "expected an integer, but got a boolean"),
        ("chat", "temperature", "0.2", "expected a number, but got a string"),
        ("chat", "top_p", True, "expected a number, but got a boolean"),
        ("chat", "seed", [1], "expected an integer, but got an array"),
        ("chat", "stop", 5, "expected a string or an array, but got an integer"),
        ("chat", "model", 1, "expected a string, but got an integer"),
        ("chat", "messages", {"role": "user"}, "expected an array, but got an object"),
        ("chat", "stream_options", "yes", "expected an object, but got a string"),
        ("chat", "stream_options.include_usage", "true", "expected a boolean, but got a string"),
        ("chat", "response_format", "json", "expected an object"),
        ("chat", "response_format.type", 1, "expected a string"),
        ("text", "prompt", 5, "expected a string or an array, but got an integer"),
        ("text", "stream", "true", "expected a boolean"),
        ("text", "echo", "no", "expected a boolean"),
    ]
    for kind, path, value, words in cases:
        err = api_error(parse_completion, body_with(kind, path, value), config(), kind)
        assert err.status == 400 and f"Invalid type for '{path}': {words}" in err.message, (path, err.message)


def test_right_types_pass_and_null_is_not_given():
    req = parse_completion(
        {
            "messages": U,
            "max_tokens": 3.0,  # an integral number is an integer, as in JSON Schema
            "temperature": 1,
            "stream": False,
            "stream_options": {"include_usage": None},
            "response_format": {"type": "text"},
            "n": None,
            "user": "me",
            "unknown_field": object(),  # not in the table: ignored
        },
        config(),
        "chat",
    )
    assert req.params.max_tokens == 3 and req.stream is False and req.include_usage is False
    assert parse_completion({"prompt": ["p"], "stream": None, "echo": False}, config(), "text").prompts == (
        "p",
    )
