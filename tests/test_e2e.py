"""End to end on the real demo GGUF (SmolLM2-135M): subprocesses, pipes, a pty, signals."""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from starchat_cli.core.errors import ExitCode
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import ChatMLFormat, Message

from .helpers.cli import REPO, run_starchat, start_starchat

pytestmark = pytest.mark.e2e

ANSI = re.compile(rb"\x1b\[")
COLOR = re.compile(rb"\x1b\[[0-9;]*(3[0-9]|38;|9[0-7])[0-9;]*m")


def test_code_flag_writes_a_runnable_script(demo_gguf, tmp_path):
    res = run_starchat(
        ["ask", "-m", "demo", "-t", "0", "--code", "Write a Python function that reverses a string."]
    )
    assert res.returncode == 0, res.stderr
    code = res.stdout.decode()
    tree = ast.parse(code)
    funcs = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert funcs, code
    namespace: dict = {}
    exec(compile(tree, "answer.py", "exec"), namespace)
    assert namespace[funcs[0]]("starchat") == "tahcrats"
    assert "```" not in code and not ANSI.search(res.stdout)


def test_piped_stdin_and_plain_output(demo_gguf):
    src = b"def add(a, b):\n    return a + b\n"
    res = run_starchat(["ask", "-m", "demo", "-t", "0", "-n", "40", "Explain this function."], input=src)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() and not ANSI.search(res.stdout)
    assert res.stdout.endswith(b"\n")
    assert b"stopped at --max-tokens 40" in res.stderr


def test_stdin_alone_is_the_prompt(demo_gguf):
    res = run_starchat(["ask", "-m", "demo", "-t", "0", "-n", "10", "--json"], input=b"What is 2 + 2?")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["stats"]["generated_tokens"] >= 1


def test_long_piped_input_keeps_the_newest_part_and_warns(demo_gguf):
    lines = "".join(f"log line {i}: all good\n" for i in range(3000)).encode()
    res = run_starchat(
        ["ask", "-m", "demo", "-t", "0", "-n", "16", "--ctx", "512", "--json", "What is the last log line?"],
        input=lines,
    )
    assert res.returncode == 0, res.stderr
    assert b"kept the last" in res.stderr and b"raise --ctx" in res.stderr
    stats = json.loads(res.stdout)["stats"]
    assert stats["truncated_chars"] > 0
    assert 400 < stats["prompt_tokens"] <= 512 - 16  # as much input as fits, room left for the reply


def test_question_longer_than_the_context_is_refused(demo_gguf):
    question = "please " * 2000
    res = run_starchat(["ask", "-m", "demo", "--ctx", "256", question])
    assert res.returncode == ExitCode.CONTEXT
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "raise --ctx" in lines[0]


def test_ctrl_c_mid_stream(demo_gguf):
    proc = start_starchat(
        [
            "ask",
            "-m",
            "demo",
            "-t",
            "0",
            "Write a very long essay about the history of programming languages.",
        ]
    )
    got = b""
    deadline = time.time() + 120
    while len(got) < 20 and time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            got += os.read(proc.stdout.fileno(), 4096)
    assert got, "no streamed output before the interrupt"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert b"Traceback" not in err
    assert err.decode().strip().splitlines()[-1] == "starchat: error: interrupted"


def test_broken_pipe_is_quiet(demo_gguf):
    """`starchat ask ... | head -c 5`: starchat itself (PIPESTATUS[0], not head) ends 141, silently."""
    cmd = (
        f'"{sys.executable}" -m starchat_cli ask -m demo -t 0 "Count from 1 to 200." | head -c 5; '
        'echo "|${PIPESTATUS[0]}"'
    )
    res = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, cwd=REPO, timeout=300, stdin=subprocess.DEVNULL
    )
    answer, _, status = res.stdout.rpartition(b"|")
    assert len(answer) == 5
    assert status.strip() == b"141", res.stderr.decode()
    assert b"Traceback" not in res.stderr and b"BrokenPipe" not in res.stderr
    assert b"Exception ignored" not in res.stderr


def run_in_pty(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    proc = start_starchat(
        args, env={"TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40", **env}, stdout=slave
    )
    os.close(slave)
    out = b""
    while True:
        try:
            ready, _, _ = select.select([master], [], [], 1)
        except OSError:
            break
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, out


def test_terminal_output_is_rendered_markdown(demo_gguf):
    args = ["ask", "-m", "demo", "-t", "0", "-n", "60", "Write a Python function that reverses a string."]
    rc, out = run_in_pty(args, {})
    assert rc == 0
    assert COLOR.search(out), out[:400]  # syntax highlighting
    assert b"```" not in out  # fences are rendered, not shown
    rc, out = run_in_pty(args, {"NO_COLOR": "1"})
    assert rc == 0
    assert not COLOR.search(out), out[:400]
    assert b"reverse" in out


# -- the engine on the real model ----------------------------------------------------------


def test_stops_on_the_end_token_and_reuses_the_kv_cache(demo_engine):
    turns = [Message("user", "Say hello in one short sentence.")]
    first = demo_engine.generate(turns, GenerationParams(temperature=0, max_tokens=200))
    text = "".join(first)
    assert first.stats.stop_reason == "stop"
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    again = demo_engine.generate(turns, GenerationParams(temperature=0, max_tokens=200))
    assert "".join(again) == text  # greedy is deterministic
    assert again.stats.cached_tokens == again.stats.prompt_tokens  # the same prompt: nothing evaluated
    follow = turns + [Message("assistant", text), Message("user", "And in French?")]
    third = demo_engine.generate(follow, GenerationParams(temperature=0, max_tokens=20))
    list(third)
    assert third.stats.cached_tokens >= first.stats.prompt_tokens - 1


def test_text_stop_cuts_the_real_stream(demo_engine, demo_backend):
    """A plain-text stop (as starcoder2-instruct's ###) ends generation and is cut out."""
    from dataclasses import replace

    from starchat_cli.engine.llamacpp.engine import LocalEngine as Engine

    turns = [Message("user", "Write a Python function that reverses a string.")]
    full = "".join(demo_engine.generate(turns, GenerationParams(temperature=0, max_tokens=120)))
    assert "[::-1]" in full
    fmt = replace(ChatMLFormat(), stop_texts=("[::-1]",))
    engine = Engine(demo_backend, fmt, demo_engine.default_system)
    gen = engine.generate(turns, GenerationParams(temperature=0, max_tokens=120))
    text = "".join(gen)
    assert gen.stats.stop_reason == "stop"
    assert text == full[: full.index("[::-1]")]


def test_text_held_back_for_a_stop_is_released_when_the_stream_ends(demo_engine):
    """A reply ending in the first characters of a text stop keeps them (the filter flushes)."""
    turns = [Message("user", "Write a Python function that reverses a string.")]
    params = GenerationParams(temperature=0, max_tokens=12)
    full = "".join(demo_engine.generate(turns, params))
    assert full.strip()
    tail = full[-3:]  # the stream ends (max_tokens) inside a would-be stop: held back, then flushed
    gen = demo_engine.generate(turns, GenerationParams(temperature=0, max_tokens=12, stop=(tail + "\x00",)))
    text = "".join(gen)
    assert gen.stats.stop_reason == "length"
    assert text == full


def test_cancelling_a_generation(demo_engine):
    gen = demo_engine.generate([Message("user", "Tell a long story.")], GenerationParams(temperature=0))
    next(gen)
    gen.close()
    assert gen.stats.stop_reason == "cancelled"
    # The engine is usable again right away.
    after = demo_engine.generate([Message("user", "hi")], GenerationParams(temperature=0, max_tokens=3))
    assert len(list(after)) >= 1


def test_every_family_format_runs_on_a_real_model(demo_backend):
    from starchat_cli.engine.llamacpp.engine import LocalEngine as Engine
    from starchat_cli.engine.prompting.formats import FORMATS

    for name, fmt in FORMATS.items():
        engine = Engine(demo_backend, fmt, None)
        gen = engine.generate(
            [Message("user", "hi")], GenerationParams(temperature=0, max_tokens=8), system="Be brief."
        )
        list(gen)
        assert gen.stats.generated_tokens >= 1, name
        assert gen.stats.stop_reason in ("stop", "length"), name


def test_a_gguf_path_uses_its_own_chat_template(demo_gguf):
    res = run_starchat(["ask", "-m", str(demo_gguf), "-t", "0", "-n", "8", "--json", "hi"])
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["format"] == "gguf"
    assert data["stats"]["generated_tokens"] >= 1


def test_threads_ctx_and_gpu_reach_llama_cpp(demo_gguf):
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions

    backend = LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=100_000, n_threads=1, gpu=3))
    llm = backend.load()
    assert llm.n_threads == 1
    assert backend.n_ctx == 8192  # capped at the model's trained context
    assert llm.model_params.n_gpu_layers == 3
    off = LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=512, gpu="off"))
    assert off.load().model_params.n_gpu_layers == 0


def test_gpu_flag_and_verbose_plan(demo_gguf):
    res = run_starchat(["ask", "-m", "demo", "--gpu", "off", "-v", "-t", "0", "-n", "2", "hi"])
    assert res.returncode == 0, res.stderr
    assert b"gpu: GPU off" in res.stderr and b"format chatml" in res.stderr
    res = run_starchat(["ask", "-m", "demo", "--gpu", "lots", "hi"])
    assert res.returncode == ExitCode.CONFIG and b"--gpu" in res.stderr


def test_cancel_interrupts_a_long_prompt_evaluation(demo_engine, demo_backend):
    """Esc before the first token: the abort callback stops llama.cpp inside the prompt."""
    import threading

    from starchat_cli.engine.llamacpp.kv_state import PromptAborted

    backend = demo_backend
    tokens = backend.tokenize("line of text\n" * 500)  # ~2,000 tokens: several batches
    assert len(tokens) > 1024
    stop = threading.Event()
    stop.set()
    with pytest.raises(PromptAborted):
        backend.eval_prompt(tokens, abort=stop)
    assert backend.n_past < len(tokens)  # it stopped part-way, not after the whole prompt
    # Cleared, the same call evaluates everything, and decoding works again.
    stop.clear()
    backend.eval_prompt(tokens, abort=stop)
    assert backend.n_past == len(tokens)
    gen = demo_engine.generate(
        [Message("user", "hi")], GenerationParams(temperature=0, max_tokens=3), cancel=stop
    )
    assert len(list(gen)) >= 1 and gen.stats.stop_reason == "length"
    stop.set()
    cancelled = demo_engine.generate(
        [Message("user", "hello " * 300)], GenerationParams(temperature=0), cancel=stop
    )
    assert list(cancelled) == [] and cancelled.stats.stop_reason == "cancelled"
