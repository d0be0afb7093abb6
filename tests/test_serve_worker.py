"""`starchat serve` runs its model in a worker process: a native crash in a request is healed (the
request retried with safer settings) and a worker killed mid-stream fails that one request with an
error event while the server, and the next request, go on. Real servers, real `openai` client."""

from __future__ import annotations

import json
import os
import signal

import httpx
import openai
import pytest

from tests.helpers import faults
from tests.helpers.cli import run_starchat
from tests.helpers.servers import start_server, stop_server

ASK = [{"role": "user", "content": "Say hello."}]


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)


def workers() -> list[dict]:
    return json.loads(run_starchat(["ps", "--json"]).stdout)["workers"]


def test_a_crash_in_a_request_is_healed_and_the_server_goes_on(demo_gguf):
    env = {"STARCHAT_AMX": "off", **faults.env(at="prompt", unless={"flash_attn": "False"})}
    proc, base = start_server("--ctx", "1024", env=env)
    try:
        first = client(base).chat.completions.create(model="demo", messages=ASK, max_tokens=12, temperature=0)
        second = client(base).chat.completions.create(
            model="demo", messages=ASK, max_tokens=12, temperature=0
        )
        assert (
            first.choices[0].message.content
            and first.choices[0].message.content == second.choices[0].message.content
        )
    finally:
        err = stop_server(proc).decode()
    lines = [ln for ln in err.splitlines() if "worker" in ln]
    assert lines == [
        "starchat: the model worker crashed (SIGSEGV while reading the prompt): retrying without flash attention"
    ]


def test_a_worker_killed_mid_stream_fails_that_request_only(demo_gguf):
    proc, base = start_server("--ctx", "1024")
    try:
        [worker] = workers()
        events = []
        body = {
            "model": "demo",
            "messages": ASK,
            "max_tokens": 400,
            "temperature": 0,
            "stream": True,
            "stop": ["NEVER"],
        }
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as res:
            assert res.status_code == 200
            for line in res.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        os.kill(worker["pid"], signal.SIGKILL)
        assert events[-1] != "[DONE]"
        error = json.loads(events[-1])["error"]
        assert "was killed by SIGKILL while replying" in error["message"] and error["type"] == "server_error"

        with pytest.raises(openai.APIError, match="SIGKILL"):  # the openai client raises such an event
            killer = client(base).chat.completions.create(
                model="demo", messages=ASK, max_tokens=400, temperature=0, stream=True, stop=["NEVER"]
            )
            for n, _ in enumerate(killer):
                if n == 2:
                    os.kill(workers()[0]["pid"], signal.SIGKILL)

        again = client(base).chat.completions.create(model="demo", messages=ASK, max_tokens=8, temperature=0)
        assert again.choices[0].message.content
        assert proc.poll() is None  # the server never went down
        [fresh] = workers()
        assert fresh["pid"] != worker["pid"]
    finally:
        stop_server(proc)
