"""A remote engine that answers garbage: exit 10 naming what came back, never an empty answer.

Real loopback HTTP servers (http.server in a thread) play the broken endpoint; `starchat ask
--endpoint` runs as a subprocess against them, and RemoteEngine is driven directly for the
non-streamed paths.
"""

from __future__ import annotations

import json

import pytest

from starchat_cli.core.errors import ExitCode
from starchat_cli.engine.remote.engine import RemoteEngine, RemoteError

from .helpers.cli import run_starchat
from .helpers.servers import LoopbackServer, QuietHandler

MODELS = json.dumps({"object": "list", "data": [{"id": "m1", "object": "model"}]}).encode()
HTML = b"<!DOCTYPE html><html><head><title>Router login</title></head><body>hi</body></html>"
COMPLETION = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "plain answer 42"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }
).encode()


def sse(*events: object) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events
    )


GOOD_STREAM = sse(
    {"choices": [{"delta": {"content": "streamed "}, "index": 0}]},
    {"choices": [{"delta": {"content": "answer"}, "index": 0, "finish_reason": "stop"}]},
    b"[DONE]",
)

# name -> (content type, body of the 200 answer to a completion request)
ANSWERS = {
    "html": ("text/html; charset=utf-8", HTML),
    "not-json-events": ("text/event-stream", b"data: hello there\n\ndata: [DONE]\n\n"),
    "json-wrong-shape": ("application/json", b'{"result": "ok", "text": 7}'),
    "json-list": ("application/json", b"[1, 2, 3]"),
    "json-not-json": ("application/json", b"<html>oops</html>"),
    "events-wrong-shape": ("text/event-stream", sse({"choices": "nope"}, b"[DONE]")),
    "events-content-not-text": (
        "text/event-stream",
        sse({"choices": [{"delta": {"content": 5}}]}, b"[DONE]"),
    ),
    "empty-stream": ("text/event-stream", b""),
    "plain-text": ("text/csv", b"a,b,c\n1,2,3\n"),
    "good-json": ("application/json", COMPLETION),
    "good-stream": ("text/event-stream", GOOD_STREAM),
}


class Endpoint:
    """A loopback OpenAI-ish server whose /v1/models and completions answers are chosen per test."""

    def __init__(self, answer: tuple[str, bytes], models: tuple[str, bytes] = ("application/json", MODELS)):
        self.answer, self.models = answer, models
        outer = self

        class Handler(QuietHandler):
            def do_GET(self):
                self.send(*outer.models)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send(*outer.answer)

        self.http = LoopbackServer(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def endpoint():
    made = []

    def make(name: str, **kw) -> Endpoint:
        ep = Endpoint(ANSWERS[name], **kw)
        made.append(ep)
        return ep

    yield make
    for ep in made:
        ep.close()


GARBAGE = {
    "html": ["text/html", "Router login"],
    "not-json-events": ["not JSON", "hello there"],
    "json-wrong-shape": ["choices", "result"],
    "json-list": ["not an object"],
    "json-not-json": ["not JSON", "oops"],
    "events-wrong-shape": ["choices", "nope"],
    "events-content-not-text": ["not text"],
    "empty-stream": ["no events"],
    "plain-text": ["text/csv", "a,b,c"],
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_ask_against_garbage_exits_10_naming_it(name, endpoint):
    ep = endpoint(name)
    res = run_starchat(["ask", "--endpoint", ep.url, "-m", "m1", "hello"], timeout=60)
    err = res.stderr.decode()
    assert res.returncode == ExitCode.REMOTE, err
    assert res.stdout == b""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("starchat: error: "), err
    for word in GARBAGE[name]:
        assert word in lines[0], (word, lines[0])
    assert ep.url in lines[0]


@pytest.mark.parametrize(
    ("name", "text"), [("good-json", "plain answer 42"), ("good-stream", "streamed answer")]
)
def test_well_formed_answers_are_printed(name, text, endpoint):
    ep = endpoint(name)
    res = run_starchat(["ask", "--endpoint", ep.url, "-m", "m1", "hello"], timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().strip() == text


def test_json_answer_fills_the_stats(endpoint):
    ep = endpoint("good-json")
    gen = RemoteEngine(ep.url, model="m1").generate([_user("hi")])
    assert "".join(gen) == "plain answer 42"
    assert gen.stats.prompt_tokens == 5 and gen.stats.generated_tokens == 3
    assert gen.stats.stop_reason == "stop"


@pytest.mark.parametrize("name", ["html", "json-wrong-shape", "not-json-events"])
def test_raw_completion_garbage_is_a_remote_error(name, endpoint):
    ep = endpoint(name)
    gen = RemoteEngine(ep.url, model="m1").complete("def f(")
    with pytest.raises(RemoteError) as info:
        "".join(gen)
    assert GARBAGE[name][0] in info.value.message


@pytest.mark.parametrize(
    ("models", "words"),
    [
        (("text/html", HTML), ["not JSON", "text/html", "Router login"]),
        (("application/json", b'{"models": []}'), ["listed no model", "models"]),
        (("application/json", b'{"data": [{"id": 3}]}'), ["listed no model"]),
    ],
)
def test_model_listing_garbage(models, words, endpoint):
    """The non-streamed GET /v1/models, asked when no -m is given."""
    ep = endpoint("good-stream", models=models)
    res = run_starchat(["ask", "--endpoint", ep.url, "hello"], timeout=60)
    err = res.stderr.decode()
    assert res.returncode == ExitCode.REMOTE, err
    for word in words:
        assert word in err, (word, err)


def _user(text: str):
    from starchat_cli.engine.prompting.formats import Message

    return Message("user", text)
