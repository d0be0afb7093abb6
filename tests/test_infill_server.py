"""`starchat serve` for editors: llama.cpp's /infill and OpenAI's /v1/completions with ``suffix``.

Real servers (subprocesses on loopback) with a tiny StarCoder2 GGUF that carries the real FIM
tokens; the request body is llama.vim's own (ggml-org/llama.vim autoload/llama.vim, ``s:fim``).
"""

from __future__ import annotations

import json

import httpx
import pytest

from starchat_cli.engine.params import GenerationParams

from .helpers.fake_engine import FakeEngine
from .helpers.servers import start_server, stop_server

PREFIX = "def fibonacci(n: int) -> int:\n    a, b = 0, 1\n"
MIDDLE = "    for"
SUFFIX = "\n    return a\n"
EXTRA = [{"text": "def helper():\n    return 1\n", "time": 1700000000, "filename": "util.py"}]
FIELDS = [
    "content",
    "timings/prompt_n",
    "timings/prompt_ms",
    "timings/prompt_per_token_ms",
    "timings/prompt_per_second",
    "timings/predicted_n",
    "timings/predicted_ms",
    "timings/predicted_per_token_ms",
    "timings/predicted_per_second",
    "truncated",
    "tokens_cached",
]


def llama_vim_body(prefix: str = PREFIX, middle: str = MIDDLE, suffix: str = SUFFIX, **over) -> dict:
    """llama.vim's request, field for field (its defaults: n_predict 128, t_max_predict_ms 1000)."""
    body = {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "input_extra": EXTRA,
        "prompt": middle,
        "n_predict": 16,
        "stop": [],
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.90,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "response_fields": FIELDS,
    }
    body.update(over)
    return body


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, tiny_models):
    home = str(tmp_path_factory.mktemp("infill-home"))
    proc, base = start_server(
        "--ctx",
        "1024",
        "--threads",
        "2",
        model=str(tiny_models.fim_gguf("starcoder2")),
        env={"STARCHAT_HOME": home},
    )
    yield base
    stop_server(proc)


def infill(base: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(f"{base}/infill", json=body, timeout=120, **kw)


def test_llama_vim_request_gets_its_response_fields(tiny_server):
    res = infill(tiny_server, llama_vim_body(temperature=0))
    assert res.status_code == 200, res.text
    data = res.json()
    assert set(data) == set(FIELDS)  # flat "timings/..." keys, as llama.cpp answers
    assert isinstance(data["content"], str)
    assert 1 <= data["timings/prompt_n"] and 0 < data["timings/predicted_n"] <= 16
    assert data["tokens_cached"] >= data["timings/predicted_n"] and data["truncated"] is False


def test_the_whole_answer_and_the_rendered_prompt(tiny_server):
    res = infill(tiny_server, llama_vim_body(temperature=0, response_fields=None, n_indent=0))
    data = res.json()
    assert res.status_code == 200, data
    assert data["prompt"] == (
        "<file_sep>util.py\ndef helper():\n    return 1\n"
        f"<file_sep><fim_prefix>{PREFIX}{MIDDLE}<fim_suffix>{SUFFIX}<fim_middle>"
    )
    assert data["stop"] is True and data["stop_type"] in ("eos", "limit")
    assert 0 < data["tokens_predicted"] <= 16 and data["tokens_evaluated"] > 30
    # llama.cpp's tokens_cached: the context at the end, prompt and reply, the last sampled token
    # left out unless it was fed back (an end-of-text token ends the reply and is not counted)
    fed_back = data["tokens_predicted"] - (data["stop_type"] != "eos")
    assert data["tokens_cached"] == data["tokens_evaluated"] + fed_back
    t = data["timings"]
    assert t["prompt_n"] + t["cache_n"] == data["tokens_evaluated"]
    assert t["predicted_n"] == data["tokens_predicted"] and t["prompt_ms"] > 0
    assert data["generation_settings"]["n_predict"] == 16


def test_streaming_sends_chunks_then_the_final_answer(tiny_server):
    body = llama_vim_body(temperature=0, response_fields=None, n_indent=0, t_max_predict_ms=0)
    whole = infill(tiny_server, body).json()
    with httpx.stream("POST", f"{tiny_server}/infill", json={**body, "stream": True}, timeout=120) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in res.iter_lines() if line.startswith("data:")]
    assert len(events) >= 2
    *chunks, final = events
    assert all(e["stop"] is False for e in chunks) and final["stop"] is True
    assert "".join(e["content"] for e in chunks) == whole["content"]
    assert final["content"] == "" and final["tokens_predicted"] == whole["tokens_predicted"]
    assert final["prompt"] == whole["prompt"] and "timings" in final


def test_the_next_keystroke_reuses_the_kv_prefix(tiny_server):
    text = "".join(f"value_{i} = compute({i})\n" for i in range(40))
    cursor = len(text) // 2
    first = infill(tiny_server, llama_vim_body(text[:cursor], "", text[cursor:], input_extra=[], n_predict=2))
    second = infill(
        tiny_server, llama_vim_body(text[: cursor + 3], "", text[cursor + 3 :], input_extra=[], n_predict=2)
    )
    a, b = first.json(), second.json()
    assert a["timings/prompt_n"] > 100
    assert b["timings/prompt_n"] < a["timings/prompt_n"] / 2, (a, b)


def test_unknown_fields_are_ignored_and_bad_ones_refused(tiny_server):
    ok = infill(tiny_server, {"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 2, "whatever": [1]})
    assert ok.status_code == 200 and "content" in ok.json()
    for body, param in (
        ({"input_prefix": "x", "input_extra": "not a list"}, "input_extra"),
        ({"input_prefix": "x", "input_extra": [{"text": 3}]}, "input_extra"),
        (
            {"input_prefix": "x", "input_extra": [{}]},
            "input_extra",
        ),  # llama.cpp's test_invalid_input_extra_req
        ({"input_prefix": "x", "input_extra": [{"filename": "ok"}]}, "input_extra"),
        ({"input_prefix": "x", "input_extra": [{"filename": 123, "text": "t"}]}, "input_extra"),
        ({"input_prefix": 5}, "input_prefix"),
        ({"input_prefix": "x", "n_predict": "many"}, "n_predict"),
        ({"input_prefix": "x", "n_indent": -1}, "n_indent"),
    ):
        res = infill(tiny_server, body)
        assert res.status_code == 400 and res.json()["error"]["param"] == param, (body, res.text)
    no_text = infill(tiny_server, {"input_prefix": "x", "input_extra": [{"text": "a"}, {"filename": "ok"}]})
    assert "input_extra[1].text is required" in no_text.json()["error"]["message"]


def test_completions_with_suffix_through_the_openai_client(tiny_server):
    import openai

    client = openai.OpenAI(base_url=f"{tiny_server}/v1", api_key="unused")
    reply = client.completions.create(
        model="tiny-starcoder2.gguf", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0
    )
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "temperature": 0}
    assert reply.choices[0].text == infill(tiny_server, body).json()["content"]
    assert reply.usage.completion_tokens <= 8 and reply.choices[0].finish_reason in ("stop", "length")
    stream = client.completions.create(
        model="tiny-starcoder2.gguf", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == reply.choices[0].text
    bad = httpx.post(f"{tiny_server}/v1/completions", json={"prompt": "x", "suffix": 3}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "suffix"


def test_ollama_generate_with_suffix_through_the_ollama_client(tiny_server):
    """Ollama's /api/generate with ``suffix`` (Continue's autocomplete) takes the FIM path: the same
    middle as /infill, streamed or not, and /api/show reports the "insert" capability."""
    import ollama

    client = ollama.Client(host=tiny_server)
    options = {"num_predict": 8, "temperature": 0}
    reply = client.generate(
        model="tiny-starcoder2", prompt=PREFIX, suffix=SUFFIX, stream=False, options=options
    )
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "temperature": 0}
    assert reply.response == infill(tiny_server, body).json()["content"]
    assert reply.done and 0 < reply.eval_count <= 8 and reply.prompt_eval_count > 0
    parts = list(
        client.generate(model="tiny-starcoder2", prompt=PREFIX, suffix=SUFFIX, stream=True, options=options)
    )
    assert "".join(p.response for p in parts) == reply.response and parts[-1].done
    assert "insert" in client.show("tiny-starcoder2").capabilities


def test_remote_engine_infill_gets_the_same_middle(tiny_server):
    from starchat_cli.engine.remote.engine import RemoteEngine

    remote = RemoteEngine(tiny_server)
    gen = remote.infill(PREFIX, SUFFIX, GenerationParams(max_tokens=8, temperature=0.0))
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "temperature": 0}
    assert "".join(gen) == infill(tiny_server, body).json()["content"]
    assert gen.stats.generated_tokens > 0


def test_infill_needs_the_api_key_when_serve_has_one(tmp_path, tiny_models):
    proc, base = start_server(
        "--ctx",
        "512",
        "--api-key",
        "sekret",
        model=str(tiny_models.fim_gguf("starcoder2")),
        env={"STARCHAT_HOME": str(tmp_path)},
    )
    try:
        body = {"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 2}
        assert infill(base, body).status_code == 401
        assert infill(base, body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = infill(base, body, headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200 and "content" in ok.json()
    finally:
        stop_server(proc)


def test_the_demo_model_is_refused_with_a_clear_message(demo_gguf, tmp_path):
    from starchat_cli.engine.remote.engine import RemoteEngine, RemoteError

    proc, base = start_server("--ctx", "1024", env={"STARCHAT_HOME": str(tmp_path)})
    try:
        res = infill(base, {"input_prefix": "def f():\n", "input_suffix": "\n"})
        assert res.status_code == 400
        message = res.json()["error"]["message"]
        assert "fill-in-the-middle" in message and "starcoder2-3b" in message
        res = httpx.post(f"{base}/v1/completions", json={"prompt": "def f():\n", "suffix": "\n"}, timeout=60)
        assert res.status_code == 400 and "starcoder2" in res.json()["error"]["message"]
        with pytest.raises(RemoteError) as info:
            "".join(RemoteEngine(base).infill("def f():\n", "\n"))
        assert "fill-in-the-middle" in info.value.message and "400" in info.value.message
    finally:
        stop_server(proc)


# -- the line limits, on a fake engine's fixed chunks ----------------------------------


def _limited(chunks: list[str], **kw) -> tuple[str, str]:
    from starchat_cli.server.line_limits import limit_lines

    gen = limit_lines(FakeEngine(chunks=chunks).infill("p", "s"), kw.get("n_indent", 0), kw.get("t_ms", 0))
    text = "".join(gen)
    return text, gen.stats.stop_reason


def test_n_indent_stops_at_a_line_indented_less():
    text, reason = _limited(["x = 1\n", "    y", " = 2\n", "  ", "z = 3\n"], n_indent=4)
    assert (text, reason) == ("x = 1\n    y = 2\n  ", "length")  # llama.cpp keeps the indent, drops the line
    text, reason = _limited(["a\n", "    b\n", "\n", "    c"], n_indent=4)
    assert (text, reason) == ("a\n    b\n", "length")  # an empty line is indented less too (llama.cpp)
    text, reason = _limited(["a\n", "\tb\n", "    c"], n_indent=1)
    assert (text, reason) == ("a\n\tb\n    c", "stop")  # a tab counts one, as in llama.cpp


def test_t_max_predict_ms_stops_at_the_next_newline():
    from starchat_cli.server.line_limits import limit_lines

    text, reason = _limited(["a\n", "b\n", "c\n"], t_ms=60_000)
    assert (text, reason) == ("a\nb\nc\n", "stop")  # a limit not reached changes nothing
    fake = FakeEngine(chunks=["one ", "two\n", "three", " four\n", "five\n"], pace=5)  # a chunk per 200 ms
    gen = limit_lines(fake.infill("p", "s"), 0, 500)
    assert "".join(gen) == "one two\nthree four\n" and gen.stats.stop_reason == "length"
