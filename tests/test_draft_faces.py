"""--draft on the faces (flag, config key, ask --json, serve + OpenAI's prediction) and the
remote engine's prediction field against real loopback HTTP servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.cli import REPO, run_starchat
from tests.helpers.servers import LoopbackServer, QuietHandler, start_server, stop_server

CODE = "\n".join(f"def scan_{i}(text):\n    return py_make_scanner(text, {i})" for i in range(5))


def test_draft_flag_is_validated() -> None:
    res = run_starchat(["ask", "-m", "demo", "--draft", "sometimes", "hi"])
    assert res.returncode == 3, res.stderr
    err = res.stderr.decode()
    assert "--draft" in err and '"auto", "on" or "off"' in err and "Traceback" not in err


def test_draft_config_key_and_flag(isolated_home: Path) -> None:
    from starchat_cli.services.runtime import generation_params, load_settings

    assert load_settings({})[0].draft == "auto"
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "config.toml").write_text('draft = "on"\n')
    settings, _ = load_settings({})
    assert settings.draft == "on" and generation_params(settings).draft == "on"
    assert generation_params(load_settings({"draft": "OFF"})[0]).draft == "off"
    (isolated_home / "config.toml").write_text('draft = "maybe"\n')
    res = run_starchat(["ask", "-m", "demo", "hi"])
    assert res.returncode == 3 and b"draft" in res.stderr


@pytest.mark.parametrize("command", ["ask", "chat", "serve"])
def test_draft_flag_in_help(command: str) -> None:
    res = run_starchat([command, "--help"])
    assert res.returncode == 0 and b"--draft" in res.stdout


def test_ask_json_reports_draft_stats() -> None:
    question = "Repeat this code exactly, in a code block."
    res = run_starchat(
        ["ask", "-m", "demo", "-t", "0", "-n", "40", "--draft", "on", "--json", question], input=CODE.encode()
    )
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)["stats"]
    plain = run_starchat(
        ["ask", "-m", "demo", "-t", "0", "-n", "40", "--draft", "off", "--json", question],
        input=CODE.encode(),
    )
    assert json.loads(plain.stdout)["text"] == json.loads(res.stdout)["text"]
    assert stats["accepted_tokens"] > 0 and stats["accepted_tokens"] <= stats["drafted_tokens"]
    assert 0 < stats["decode_steps"] < stats["generated_tokens"] - 1
    assert json.loads(plain.stdout)["stats"]["drafted_tokens"] == 0


def _chat(base: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)


def test_serve_takes_openais_prediction() -> None:
    proc, base = start_server("--draft", "on")
    try:
        body = {
            "model": "demo",
            "messages": [{"role": "user", "content": f"Repeat this code exactly:\n{CODE}"}],
            "temperature": 0,
            "max_tokens": 40,
        }
        plain = _chat(base, body)
        predicted = _chat(base, {**body, "prediction": {"type": "content", "content": CODE}})
        assert plain.status_code == 200 == predicted.status_code, predicted.text
        p, q = plain.json(), predicted.json()
        assert q["choices"][0]["message"]["content"] == p["choices"][0]["message"]["content"]
        details = q["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] > 0
        assert q["usage"]["decode_steps"] < q["usage"]["completion_tokens"]
        bad = _chat(base, {**body, "prediction": {"type": "text", "content": 3}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "prediction"
    finally:
        stop_server(proc)


# -- the remote engine --------------------------------------------------------------------


class Strict(QuietHandler):
    """An OpenAI-compatible server that rejects unknown fields such as "prediction"."""

    bodies: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if "prediction" in body:
            error = {"error": {"message": "Unrecognized request argument: prediction"}}
            return self.send("application/json", json.dumps(error).encode(), 400)
        events = [
            {"choices": [{"delta": {"content": "hello"}, "finish_reason": None}]},
            {"choices": [{"delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        ]
        data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self.send("text/event-stream", data.encode())


def test_remote_engine_drops_prediction_once_the_server_rejects_it() -> None:
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message
    from starchat_cli.engine.remote.engine import RemoteEngine

    Strict.bodies = []
    server = LoopbackServer(Strict)
    try:
        engine = RemoteEngine(server.url, model="m")
        params = GenerationParams(prediction="print('x')")
        assert "".join(engine.generate([Message("user", "hi")], params)) == "hello"
        assert [("prediction" in b) for b in Strict.bodies] == [True, False]
        gen = engine.generate([Message("user", "hi")], params)
        assert "".join(gen) == "hello" and gen.stats.stop_reason == "stop"
        assert [("prediction" in b) for b in Strict.bodies] == [True, False, False]  # remembered
    finally:
        server.close()


def test_remote_engine_sends_prediction_to_starchat_serve() -> None:
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message
    from starchat_cli.engine.remote.engine import RemoteEngine

    proc, base = start_server("--draft", "on")
    try:
        engine = RemoteEngine(base, model="demo")
        params = GenerationParams(temperature=0, max_tokens=30, prediction=CODE)
        gen = engine.generate([Message("user", f"Repeat this code exactly:\n{CODE}")], params)
        assert "".join(gen).strip()
        assert engine.prediction_supported
        assert gen.stats.accepted_tokens > 0 and gen.stats.drafted_tokens >= gen.stats.accepted_tokens
    finally:
        stop_server(proc)


def test_benchmark_quick_smoke() -> None:
    res = subprocess.run(
        [sys.executable, "benchmarks/drafts.py", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "edit: tokens/step with on" in out and "fresh: tokens/step with on" in out
    assert "batch-cost curve" in out and "1: 1.00x" in out
    assert "drafted text == plain: True" in out
