"""Real clients against a real `starchat serve` (the demo model on 127.0.0.1): the `openai` and
`ollama` Python packages, simonw's `llm` CLI, aider's request bodies replayed byte for byte, and
the routes around the completions (/tokenize, /detokenize, /props, /v1/models/{id}, refusals).

Clients name the model they were configured with (aider's `gpt-4o-mini`, an Ollama client's
`llama3`): serve answers with its one model, reports that model's name, and says so on stderr
once per distinct name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.servers import start_server, stop_server

AIDER = Path(__file__).parent / "data" / "aider"
SERVED = "demo"  # what `serve -m demo` reports as the model's name
NAMED: set[str] = set()  # unknown model names a test that ran sent (their note is checked at teardown)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("clients-home"))
    # aider's bodies carry no max_tokens: the limit bounds each reply (replayed bodies stay as sent)
    proc, base = start_server("--ctx", "8192", "--max-tokens-limit", "96", env={"STARCHAT_HOME": home})
    yield base
    err = stop_server(proc).decode()
    assert proc.returncode == 0, err
    # each distinct unknown name is said once, however many requests used it
    for name in ("gpt-4o-mini", "llama3"):
        said = err.count(f"a request named model '{name}'")
        assert said == 1 if name in NAMED else said <= 1, err  # other tests may send it too


def openai_client(base: str):
    import openai

    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


# -- the openai client ---------------------------------------------------------------------------


def test_openai_unknown_model_gets_the_served_model(served: str) -> None:
    client = openai_client(served)
    hi = [{"role": "user", "content": "Say hello."}]
    NAMED.add("gpt-4o-mini")
    for _ in range(2):  # the name is noted once (checked at teardown)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=hi, max_tokens=8, temperature=0)
        assert reply.model == SERVED and reply.choices[0].message.content
    parts = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=hi, max_tokens=8, temperature=0, stream=True
        )
    )
    assert {p.model for p in parts} == {SERVED}
    text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    assert text == reply.choices[0].message.content
    done = client.completions.create(
        model="gpt-4o-mini", prompt="def add(a, b):", max_tokens=6, temperature=0
    )
    assert done.model == SERVED and done.choices[0].text
    # one backend, one fingerprint: on every reply and every streamed chunk, llama.cpp's "b..." form
    prints = {reply.system_fingerprint, done.system_fingerprint, *(p.system_fingerprint for p in parts)}
    assert len(prints) == 1 and str(reply.system_fingerprint).startswith("b")


def test_openai_models_and_refusals(served: str) -> None:
    import openai

    client = openai_client(served)
    assert [m.id for m in client.models.list()] == [SERVED]
    for name in ("gpt-4o-mini", SERVED):
        model = client.models.retrieve(name)
        assert model.id == SERVED and model.object == "model"
    with pytest.raises(openai.APIStatusError) as err:
        client.embeddings.create(model="gpt-4o-mini", input="hello")
    assert err.value.status_code == 501 and "embeddings" in err.value.message
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "not_implemented"
    with pytest.raises(openai.APIStatusError) as err:
        client.images.generate(model="dall-e-3", prompt="a cat")
    assert err.value.status_code == 501 and "image" in err.value.message


# -- the ollama client ---------------------------------------------------------------------------


def test_ollama_unknown_model_and_refusals(served: str) -> None:
    import ollama

    client = ollama.Client(host=served, timeout=120)
    NAMED.add("llama3")
    reply = client.chat(
        model="llama3", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 4}
    )
    assert reply.model == f"{SERVED}:latest" and reply.message.content
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("starchat2")
    assert err.value.status_code == 501 and "`starchat pull MODEL`" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="llama3", input="hello")
    assert err.value.status_code == 501 and "embeddings" in err.value.error
    for call in (lambda: client.delete("llama3"), lambda: client.copy("llama3", "other")):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 501 and "does not manage models" in err.value.error


# -- llama.cpp's routes --------------------------------------------------------------------------


def test_tokenize_and_detokenize_match_the_model_tokenizer(served: str, demo_backend) -> None:
    text = "def hello():\n    return 'é'<|im_end|>"
    r = httpx.post(f"{served}/tokenize", json={"content": text}, timeout=30)
    assert r.status_code == 200 and r.json() == {"tokens": demo_backend.tokenize(text)}
    plain = httpx.post(f"{served}/tokenize", json={"content": text, "parse_special": False}).json()["tokens"]
    assert plain == demo_backend.tokenize(text, special=False) and len(plain) > len(r.json()["tokens"])
    bos = httpx.post(f"{served}/tokenize", json={"content": text, "add_special": True}).json()["tokens"]
    assert bos == demo_backend.tokenize(text, add_bos=True)
    pieces = httpx.post(f"{served}/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == r.json()["tokens"]
    joined = b"".join(
        p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces
    )
    assert joined.decode() == text
    back = httpx.post(f"{served}/detokenize", json={"tokens": r.json()["tokens"]})
    assert back.status_code == 200 and back.json() == {"content": text}


def test_tokenize_errors_name_the_field(served: str) -> None:
    for path, body, param in (
        ("/tokenize", {}, "content"),
        ("/tokenize", {"content": 5}, "content"),
        ("/tokenize", {"content": "x", "with_pieces": "yes"}, "with_pieces"),
        ("/detokenize", {"tokens": ["a"]}, "tokens"),
        ("/detokenize", {"tokens": [10**9]}, None),
    ):
        r = httpx.post(f"{served}{path}", json=body)
        assert r.status_code == 400, (path, body)
        error = r.json()["error"]
        assert error["param"] == param and (param or "vocabulary") in error["message"]


def test_props(served: str, demo_gguf) -> None:
    from starchat_cli.models.gguf_info import read_gguf_info

    props = httpx.get(f"{served}/props").json()
    assert props["total_slots"] == 1 and Path(props["model_path"]) == demo_gguf
    assert props["chat_template"] == read_gguf_info(demo_gguf).chat_template
    settings = props["default_generation_settings"]
    assert settings["n_ctx"] == 8192 and settings["is_processing"] is False
    assert props["model_alias"] == SERVED and props["prompt_format"] == "chatml"


def test_routes_not_served_have_their_familys_shape(served: str) -> None:
    for path, status in (("/v1/audio/speech", 501), ("/v1/nothing", 404), ("/rerank", 501)):
        r = httpx.post(f"{served}{path}", json={})
        error = r.json()["error"]
        assert r.status_code == status and isinstance(error, dict) and error["message"], path
    for path in ("/api/create", "/api/push", "/api/embeddings", "/api/blobs/sha256:00"):
        r = httpx.post(f"{served}{path}", json={})
        assert r.status_code == 501 and isinstance(r.json()["error"], str), path


def test_llama_cpps_native_completion(served: str) -> None:
    """/completion (Continue's llama.cpp provider): the same greedy text as /v1/completions, in
    llama.cpp's shape, streamed or not; token ids, prompt_string objects and prompt lists."""
    prompt = "def fibonacci(n):\n"
    v1 = httpx.post(
        f"{served}/v1/completions", json={"prompt": prompt, "max_tokens": 12, "temperature": 0}, timeout=120
    ).json()
    body = {"prompt": prompt, "n_predict": 12, "temperature": 0}
    res = httpx.post(f"{served}/completion", json=body, timeout=120).json()
    assert res["content"] == v1["choices"][0]["text"] and res["stop"] is True
    assert res["timings"]["predicted_n"] == res["tokens_predicted"] == 12 and res["stop_type"] == "limit"
    assert res["prompt"] == prompt and res["generation_settings"]["n_predict"] == 12
    with httpx.stream("POST", f"{served}/completion", json={**body, "stream": True}, timeout=120) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert "".join(e["content"] for e in events) == res["content"]
    assert [e["stop"] for e in events][-1] is True and not any(e["stop"] for e in events[:-1])
    ids = httpx.post(f"{served}/tokenize", json={"content": prompt}).json()["tokens"]
    many = httpx.post(
        f"{served}/completion", json={**body, "prompt": [ids, {"prompt_string": prompt}]}, timeout=120
    ).json()
    assert [m["content"] for m in many] == [res["content"]] * 2 and [m["index"] for m in many] == [0, 1]
    # one prompt of ids and texts mixed (llama.cpp's form): each text's tokens spliced in place
    a, b = "def fibonacci", "(n):<|im_end|>"
    ids_a = httpx.post(f"{served}/tokenize", json={"content": a}).json()["tokens"]
    ids_b = httpx.post(f"{served}/tokenize", json={"content": b, "parse_special": True}).json()["tokens"]
    mixed = httpx.post(f"{served}/completion", json={**body, "prompt": [*ids_a, b]}, timeout=120).json()
    spliced = httpx.post(f"{served}/completion", json={**body, "prompt": ids_a + ids_b}, timeout=120).json()
    assert mixed["content"] == spliced["content"] and mixed["tokens_evaluated"] == len(ids_a) + len(ids_b)
    only = httpx.post(f"{served}/completions", json={**body, "response_fields": ["content"]}, timeout=120)
    assert only.json() == {"content": res["content"]}
    for bad, param in (
        ({"n_probs": 21}, "n_probs"),
        ({"return_tokens": True}, "return_tokens"),
        ({"prompt": {"prompt_string": "x", "multimodal_data": ["AAAA"]}}, "prompt"),
        ({"prompt": [prompt, prompt], "stream": True}, "prompt"),
        ({"typical_p": 0.5}, "typical_p"),
    ):
        r = httpx.post(f"{served}/completion", json={**body, **bad}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (bad, r.text)


def test_n_probs_on_native_completion_match_the_openai_logprobs(served: str) -> None:
    """llama.cpp's n_probs: each token's id, text, bytes and log-probability with its likeliest
    alternatives, the same figures /v1/completions reports as logprobs; one entry per streamed token."""
    prompt = "def add(a, b):\n"
    v1 = httpx.post(
        f"{served}/v1/completions",
        json={"prompt": prompt, "max_tokens": 5, "temperature": 0, "logprobs": 3},
        timeout=120,
    ).json()["choices"][0]["logprobs"]
    body = {"prompt": prompt, "n_predict": 5, "temperature": 0, "n_probs": 3}
    res = httpx.post(f"{served}/completion", json=body, timeout=120).json()
    probs = res["completion_probabilities"]
    assert [p["token"] for p in probs] == v1["tokens"] and len(probs) == res["tokens_predicted"] == 5
    assert [p["logprob"] for p in probs] == pytest.approx(v1["token_logprobs"], abs=1e-4)
    ids = httpx.post(f"{served}/tokenize", json={"content": prompt + res["content"]}).json()["tokens"]
    for p, top in zip(probs, v1["top_logprobs"]):
        assert len(p["top_logprobs"]) == 3 and {t["token"] for t in p["top_logprobs"]} == set(top)
        assert p["id"] >= 0 and p["bytes"] == list(p["token"].encode()) and p["logprob"] <= 0
        assert p["top_logprobs"][0]["id"] == p["id"]  # greedy: the chosen token is the likeliest
    assert ids[-5:] == [p["id"] for p in probs]
    assert res["generation_settings"]["n_probs"] == 3
    with httpx.stream("POST", f"{served}/completion", json={**body, "stream": True}, timeout=120) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    streamed = [p for e in events if not e["stop"] for p in e["completion_probabilities"]]
    assert streamed == probs and "completion_probabilities" not in events[-1]
    plain = httpx.post(f"{served}/completion", json={**body, "n_probs": 0}, timeout=120).json()
    assert "completion_probabilities" not in plain and plain["content"] == res["content"]


def test_logit_bias_on_native_completion_by_id_and_by_text(served: str) -> None:
    """llama.cpp's logit_bias forms: [[id, bias]], {"id": bias}, a text (all its tokens) and
    false for banned; the banned token never appears, an unbanned reply is unchanged."""
    body = {"prompt": "The capital of France is", "n_predict": 6, "temperature": 0}
    plain = httpx.post(f"{served}/completion", json={**body, "n_probs": 1}, timeout=120).json()
    first = plain["completion_probabilities"][0]
    banned = [
        [[first["id"], False]],
        {str(first["id"]): -100},
        [[first["token"], False]],
        {first["token"]: -100},
    ]
    for bias in banned:
        res = httpx.post(f"{served}/completion", json={**body, "logit_bias": bias, "n_probs": 1}, timeout=120)
        assert res.status_code == 200, res.text
        ids = [p["id"] for p in res.json()["completion_probabilities"]]
        assert first["id"] not in ids, bias
    other = httpx.post(f"{served}/completion", json={**body, "logit_bias": [[0, 0.0]]}, timeout=120).json()
    assert other["content"] == plain["content"]
    for bad in ([["x"]], [[True, 1]], [[-1, 1]], [[1, 500]], "x"):
        r = httpx.post(f"{served}/completion", json={**body, "logit_bias": bad}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("logit_bias"), (bad, r.text)


def test_strict_model_refuses_other_names_on_every_route(tmp_path: Path) -> None:
    proc, base = start_server("--ctx", "512", "--strict-model", env={"STARCHAT_HOME": str(tmp_path)})
    try:
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{base}/v1/chat/completions", json=chat)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = httpx.get(f"{base}/v1/models/gpt-4o-mini")
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        r = httpx.post(f"{base}/api/chat", json={**chat, "model": "llama3"})
        assert r.status_code == 404 and r.json() == {"error": "model 'llama3' not found"}
        assert httpx.get(f"{base}/v1/models/{SERVED}").json()["id"] == SERVED
    finally:
        stop_server(proc)


# -- through the worker --------------------------------------------------------------------------


def test_tokenize_through_the_worker(demo_backend) -> None:
    from starchat_cli.core.errors import InputError
    from starchat_cli.engine.worker.client import WorkerEngine
    from starchat_cli.models.store import Store
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import engine_spec

    engine = WorkerEngine(engine_spec(Store().resolve("demo"), Settings(ctx=512)), keep_alive=0)
    try:
        text = "print('é')<|im_end|>"
        assert engine.tokenize(text) == demo_backend.tokenize(text)
        assert engine.tokenize(text, parse_special=False) == demo_backend.tokenize(text, special=False)
        ids = demo_backend.tokenize(text)
        assert engine.token_pieces(ids) == [demo_backend.piece(t, special=True) for t in ids]
        with pytest.raises(InputError):
            engine.token_pieces([10**9])
    finally:
        engine.close()


# -- simonw's llm CLI ----------------------------------------------------------------------------


def test_llm_cli_with_an_openai_compatible_model(served: str, tmp_path: Path) -> None:
    llm = Path(sys.executable).with_name("llm")
    if not llm.exists():
        pytest.fail("the llm CLI is missing: pip install -e '.[test]' installs it")
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: starchat-local\n  model_name: gpt-4o-mini\n  api_base: {served}/v1\n"
    )
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "unused"}
    for stream in ([], ["--no-stream"]):
        res = subprocess.run(
            [str(llm), "-m", "starchat-local", *stream, "-o", "max_tokens", "8", "Say hello."],
            capture_output=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr.decode()
        assert res.stdout.decode().strip(), res.stderr.decode()


# -- aider's request bodies, replayed byte for byte ----------------------------------------------


def aider_bodies() -> list[Path]:
    return sorted(AIDER.glob("*.json"))


@pytest.mark.parametrize("body", aider_bodies(), ids=lambda p: p.stem)
def test_aider_requests_replayed(served: str, body: Path) -> None:
    """The gpt-4o-mini bodies end with a system message ([system, user, ..., user, system]): they
    pass once that layout is folded (the message-layout work of issue 22, item 2)."""
    raw = body.read_bytes()
    sent = json.loads(raw)
    r = httpx.post(
        f"{served}/v1/chat/completions",
        content=raw,
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    if sent.get("stream"):
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert {c["model"] for c in chunks} == {SERVED}
    else:
        text = r.json()["choices"][0]["message"]["content"]
        assert r.json()["model"] == SERVED
    assert text.strip()
