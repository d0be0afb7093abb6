"""`starchat serve` with the demo model and the real `openai` and `ollama` clients: structured output,
n choices, logprobs, penalties, logit_bias, and tools refused with one wording on both APIs."""

from __future__ import annotations

import json
import re
from typing import Literal

import httpx
import jsonschema
import pytest
from pydantic import BaseModel

from .helpers.servers import start_server, stop_server

pytestmark = pytest.mark.e2e

PETS = [{"role": "user", "content": "Describe a pet as JSON."}]


@pytest.fixture(scope="module")
def server(demo_gguf, tmp_path_factory):
    home = str(tmp_path_factory.mktemp("serve-sampling-home"))
    proc, base = start_server("--ctx", "1024", env={"STARCHAT_HOME": home})
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0)


class Owner(BaseModel):
    city: str
    zip_code: str | None


class Pet(BaseModel):
    name: str
    kind: Literal["cat", "dog", "fish"]
    age: int
    owner: Owner


def test_openai_parse_gives_the_pydantic_model(client):
    done = client.chat.completions.parse(
        model="demo", messages=PETS, response_format=Pet, max_tokens=120, temperature=0
    )
    pet = done.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.kind in ("cat", "dog", "fish")


def test_json_schema_and_json_object_through_the_openai_client(client):
    schema = {
        "type": "object",
        "properties": {
            "langs": {"type": "array", "items": {"enum": ["python", "rust", "go"]}, "maxItems": 3}
        },
        "required": ["langs"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "langs", "schema": schema, "strict": True}}
    reply = client.chat.completions.create(
        model="demo", messages=PETS, response_format=fmt, max_tokens=60, temperature=0
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    stream = client.chat.completions.create(
        model="demo",
        messages=PETS,
        response_format={"type": "json_object"},
        max_tokens=80,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("{")


def test_a_truncated_reply_says_length(client):
    import openai

    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model="demo", messages=PETS, response_format=Pet, max_tokens=5, temperature=0
        )


def test_completions_take_llama_cpp_grammar_and_json_schema(server):
    url = f"{server}/v1/completions"
    body = {"prompt": "Is water wet? Answer:", "max_tokens": 8, "temperature": 0}
    got = httpx.post(url, json={**body, "grammar": 'root ::= " " ("yes" | "no")'}, timeout=300).json()
    assert got["choices"][0]["text"] in (" yes", " no")
    schema = {"type": "object", "properties": {"wet": {"type": "boolean"}}, "required": ["wet"]}
    got = httpx.post(url, json={**body, "max_tokens": 30, "json_schema": schema}, timeout=300).json()
    jsonschema.validate(json.loads(got["choices"][0]["text"]), schema)


@pytest.mark.parametrize(
    "body, param",
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "string", "pattern": "x"}},
                }
            },
            "response_format",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"grammar": "root ::= nowhere"}, None),
        ({"grammar": 'root ::= "a"', "json_schema": {"type": "object"}}, "json_schema"),
        ({"n": 9}, "n"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"repeat_penalty": 0}, "repeat_penalty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias.5"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"typical_p": 0.5}, "typical_p"),
        ({"mirostat": 2}, "mirostat"),
        ({"repeat_penalty": 1.2, "repeat_last_n": 128}, "repeat_last_n"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(server, body, param):
    res = httpx.post(
        f"{server}/v1/chat/completions", json={"messages": PETS, "max_tokens": 4, **body}, timeout=300
    )
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    name = param or "grammar"
    assert error["param"] == param and name.split(".")[0] in error["message"]


def test_tools_are_refused_in_the_same_words_on_both_apis(server):
    import ollama

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    v1 = httpx.post(f"{server}/v1/chat/completions", json={"model": "demo", "messages": PETS, "tools": tools})
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=server).chat(model="demo", messages=PETS, tools=tools)
    assert v1.status_code == 400 and err.value.status_code == 400
    assert v1.json()["error"]["message"] == err.value.error
    assert "does not support tools" in err.value.error and "not trained for tool calls" in err.value.error


def test_n_choices_differ_repeat_with_the_seed_and_stream_with_their_index(client):
    args = dict(model="demo", messages=PETS, max_tokens=12, temperature=1.0, seed=11, n=3)
    client.chat.completions.create(**args)  # the first request may calibrate drafting (its own draws)
    one = client.chat.completions.create(**args)
    texts = [c.message.content for c in one.choices]
    assert [c.index for c in one.choices] == [0, 1, 2] and len(set(texts)) > 1
    assert one.usage.completion_tokens == sum(
        len(
            client.chat.completions.create(**{**args, "n": 1, "seed": 11 + i, "logprobs": True})
            .choices[0]
            .logprobs.content
        )
        for i in range(3)
    )
    assert [c.message.content for c in client.chat.completions.create(**args).choices] == texts
    streamed = ["", "", ""]
    for chunk in client.chat.completions.create(**args, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == texts


def test_chat_logprobs_whole_and_streamed(client):
    args = dict(model="demo", messages=PETS, max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    whole = client.chat.completions.create(**args)
    content = whole.choices[0].logprobs.content
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    assert len(content) == whole.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob <= 0 and t.top_logprobs[0].token == t.token for t in content)
    streamed = [
        t
        for c in client.chat.completions.create(**args, stream=True)
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [
        (t.token, round(t.logprob, 4)) for t in content
    ]


def test_legacy_completion_logprobs(client):
    res = client.completions.create(
        model="demo", prompt="def add(a, b):", max_tokens=8, temperature=0, logprobs=2
    )
    lp = res.choices[0].logprobs
    assert "".join(lp.tokens) == res.choices[0].text and len(lp.token_logprobs) == 8
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]
    assert all(len(top) <= 2 and lp.tokens[i] in top for i, top in enumerate(lp.top_logprobs))


def test_penalties_and_logit_bias_reach_the_sampler(client):
    args = dict(
        model="demo",
        messages=[{"role": "user", "content": "Say hello hello hello."}],
        max_tokens=16,
        temperature=0,
    )
    plain = client.chat.completions.create(**args).choices[0].message.content
    assert client.chat.completions.create(**args, frequency_penalty=2.0).choices[0].message.content != plain
    first = (
        client.chat.completions.create(**{**args, "max_tokens": 1}, logprobs=True)
        .choices[0]
        .logprobs.content[0]
    )
    from starchat_cli.engine.llamacpp.backend import (
        LlamaCppBackend,
    )  # the id of that token, from the same file
    from starchat_cli.models.store import demo_model_path

    token = LlamaCppBackend(demo_model_path()).tokenize(first.token)[0]
    banned = client.chat.completions.create(
        **{**args, "max_tokens": 1}, logit_bias={str(token): -100}, logprobs=True
    )
    assert banned.choices[0].logprobs.content[0].token != first.token


def test_top_k_and_min_p_reach_the_sampler(client, server):
    """top_k 1 (or min_p 1) keeps only the likeliest token, so a hot sampled reply is the greedy
    one; without them the same seeds wander off it. Off values of samplers starchat does not
    run are accepted (clients send their defaults)."""
    import ollama

    args = dict(model="demo", messages=PETS, max_tokens=12, seed=3)
    greedy = client.chat.completions.create(**args, temperature=0).choices[0].message.content
    hot = dict(args, temperature=2.0)
    seed = next(  # a seed whose hot reply is not the greedy one, so the checks below can fail
        s
        for s in range(3, 9)
        if client.chat.completions.create(**{**hot, "seed": s}).choices[0].message.content != greedy
    )
    hot["seed"] = seed
    for extra in ({"top_k": 1}, {"min_p": 1.0}, {"top_k": 1, "typical_p": 1.0, "mirostat": 0}):
        reply = client.chat.completions.create(**hot, extra_body=extra)
        assert reply.choices[0].message.content == greedy, extra
    text = (
        client.completions.create(model="demo", prompt="def add(a, b):", max_tokens=8, temperature=0)
        .choices[0]
        .text
    )
    top1 = client.completions.create(
        model="demo", prompt="def add(a, b):", max_tokens=8, temperature=2.0, seed=5, extra_body={"top_k": 1}
    )
    assert top1.choices[0].text == text
    cli = ollama.Client(host=server)
    plain = cli.generate(model="demo", prompt="Hi", options={"temperature": 0, "num_predict": 8}).response
    top1_ollama = cli.generate(
        model="demo", prompt="Hi", options={"temperature": 2, "top_k": 1, "seed": 9, "num_predict": 8}
    ).response
    assert top1_ollama == plain
    with pytest.raises(ollama.ResponseError, match=re.escape("options.tfs_z")):
        cli.generate(model="demo", prompt="Hi", options={"tfs_z": 0.9})
    infill = httpx.post(f"{server}/infill", json={"input_prefix": "x = ", "typical_p": 0.3}, timeout=60)
    assert infill.status_code == 400 and "typical_p" in infill.text


def test_ollama_format_logprobs_and_penalty_options(server):
    import ollama

    cli = ollama.Client(host=server)
    schema = {
        "type": "object",
        "properties": {"kind": {"enum": ["cat", "dog"]}, "age": {"type": "integer"}},
        "required": ["kind", "age"],
    }
    reply = cli.chat(
        model="demo", messages=PETS, format=schema, options={"temperature": 0, "num_predict": 60}
    )
    jsonschema.validate(json.loads(reply.message.content), schema)
    reply = cli.generate(
        model="demo", prompt="A pet as JSON:", format="json", options={"temperature": 0, "num_predict": 60}
    )
    assert reply.response.startswith("{")
    reply = cli.generate(
        model="demo", prompt="Hi", logprobs=True, top_logprobs=2, options={"temperature": 0, "num_predict": 6}
    )
    assert "".join(t.token for t in reply.logprobs) == reply.response and all(
        len(t.top_logprobs) == 2 for t in reply.logprobs
    )
    parts = list(
        cli.chat(
            model="demo",
            messages=PETS,
            logprobs=True,
            stream=True,
            options={"temperature": 0, "num_predict": 6},
        )
    )
    assert sum(len(p.logprobs or []) for p in parts) == parts[-1].eval_count
    with pytest.raises(ollama.ResponseError, match=re.escape("options.repeat_penalty")):
        cli.generate(model="demo", prompt="Hi", options={"repeat_penalty": 0})
    with pytest.raises(ollama.ResponseError, match="format"):
        cli.generate(model="demo", prompt="Hi", format={"type": "string", "pattern": "a"})


def test_infill_takes_a_grammar_a_schema_and_penalties():
    from starchat_cli.server.app import ServerConfig
    from starchat_cli.server.errors import APIError
    from starchat_cli.server.infill import parse_infill

    config = ServerConfig(model_name="fake")
    req = parse_infill(
        {
            "input_prefix": "x = ",
            "grammar": "root ::= [0-9]+",
            "repeat_penalty": 1.3,
            "top_k": 4,
            "min_p": 0.1,
        },
        config,
    )
    assert req.params.grammar == "root ::= [0-9]+" and req.params.repeat_penalty == 1.3
    assert (req.params.top_k, req.params.min_p) == (4, 0.1) and req.params.plain_decoding
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert "integer" in parse_infill({"json_schema": schema}, config).params.grammar
    assert parse_infill({"n_probs": 3}, config).params.logprobs == 3
    assert parse_infill({"n_probs": 0}, config).params.logprobs is None
    assert parse_infill({"ignore_eos": False, "lora": []}, config).params.logit_bias == ()  # off values pass
    for body, param in [
        ({"json_schema": {"pattern": "a"}}, "json_schema"),
        ({"n_probs": 21}, "n_probs"),
        ({"n_probs": -1}, "n_probs"),
        ({"n_probs": 2, "post_sampling_probs": True}, "post_sampling_probs"),
        ({"ignore_eos": True}, "ignore_eos"),
        ({"lora": [{"id": 0, "scale": 1.0}]}, "lora"),
    ]:
        with pytest.raises(APIError) as err:
            parse_infill(body, config)
        assert err.value.param == param and param in err.value.message


def test_the_seed_setting_is_the_default_seed_of_every_route(tmp_path):
    """`seed` (config, STARCHAT_SEED) seeds the requests that send none, as llama-server's --seed:
    the same sampled request twice gives the same text on /v1, /completion and /api; a request's
    own seed (Ollama's -1: random) still wins; /props reports it."""
    import httpx

    env = {"STARCHAT_HOME": str(tmp_path), "STARCHAT_SEED": "42", "STARCHAT_TEMPERATURE": "1.2"}
    proc, base = start_server("--ctx", "1024", "--draft", "off", env=env)
    try:
        prompt = "Once upon a time"
        routes = [
            (
                f"{base}/v1/completions",
                {"prompt": prompt, "max_tokens": 12},
                lambda r: r["choices"][0]["text"],
            ),
            (f"{base}/completion", {"prompt": prompt, "n_predict": 12}, lambda r: r["content"]),
            (
                f"{base}/api/generate",
                {
                    "model": "demo",
                    "prompt": prompt,
                    "raw": True,
                    "stream": False,
                    "options": {"num_predict": 12},
                },
                lambda r: r["response"],
            ),
        ]
        texts = []
        for url, body, text in routes:
            first, again = (text(httpx.post(url, json=body, timeout=120).json()) for _ in range(2))
            assert first == again and first, url
            texts.append(first)
        assert texts[0] == texts[1] == texts[2]  # one prompt, one seed, one sampler: one text
        other = httpx.post(routes[0][0], json={**routes[0][1], "seed": 7}, timeout=120).json()
        assert other["choices"][0]["text"] != texts[0]
        assert httpx.get(f"{base}/props").json()["default_generation_settings"]["params"]["seed"] == 42
    finally:
        stop_server(proc)
