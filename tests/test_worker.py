"""The model worker (engine/worker/): real worker processes on the demo model.

One worker per model and settings, reused while it is kept alive, shared by concurrent calls;
keep-alive 0 leaves nothing behind; `ps`/`stop`; a worker killed mid-reply is one clean error
and the next call starts afresh; a stale socket is replaced; an unsafe runtime folder is refused;
errors raised in the worker reach the face as the same one-line error and exit code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.cli import run_starchat, start_starchat

WARM = {"STARCHAT_KEEP_ALIVE": "5m"}
ASK = ["ask", "-m", "demo", "-t", "0", "--ctx", "1024"]


def workers() -> list[dict]:
    res = run_starchat(["ps", "--json"])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["workers"]


def run_dir(home: Path) -> Path:
    return home / "run"


def gone(pid: int, within: float = 5.0) -> bool:
    from starchat_cli.engine.worker.registry import alive

    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def ask_json(*words: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> dict:
    res = run_starchat([*ASK, "-n", "4", "--json", *args, *words], env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_a_second_ask_reuses_the_worker_and_its_kv(demo_gguf):
    first = ask_json("say hi", env=WARM)
    [worker] = workers()
    second = ask_json("say hi", env=WARM)
    assert [w["pid"] for w in workers()] == [worker["pid"]]
    assert first["text"] == second["text"]
    assert first["stats"]["load_seconds"] > 0 and second["stats"]["load_seconds"] == 0
    assert second["stats"]["cached_tokens"] == second["stats"]["prompt_tokens"]  # nothing evaluated
    assert second["stats"]["cached_from"] == "memory"
    assert worker["model"] == "demo" and worker["n_ctx"] == 1024 and worker["memory_bytes"] > 0
    assert 0 < worker["idle_left_seconds"] <= 300 and worker["path"] == str(demo_gguf)


def test_keep_alive_zero_leaves_no_process_and_no_socket(demo_gguf, isolated_home):
    ask_json("hi")  # the tests' default: STARCHAT_KEEP_ALIVE=0
    assert workers() == []
    assert not list(run_dir(isolated_home).glob("*.sock")) and not list(run_dir(isolated_home).glob("*.json"))


def test_stop_ends_a_worker_and_ps_forgets_it(demo_gguf):
    ask_json("hi", env=WARM)
    [worker] = workers()
    res = run_starchat(["stop", "demo"])
    assert res.returncode == 0 and f"stopped demo (pid {worker['pid']})" in res.stdout.decode()
    assert gone(worker["pid"]) and workers() == []
    assert run_starchat(["stop", "demo"]).returncode == 4  # nothing to stop: one line, exit 4
    ask_json("hi", env=WARM)
    assert run_starchat(["stop", "--all"]).returncode == 0 and workers() == []


def test_a_worker_killed_mid_reply_is_one_clean_error_and_the_next_call_starts_afresh(demo_gguf):
    proc = start_starchat([*ASK, "-n", "2000", "--raw", "write a long story about a dragon"], env=WARM)
    assert proc.stdout is not None and proc.stdout.read(1)  # the reply is streaming
    [worker] = workers()
    os.kill(worker["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 13, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "was killed by SIGKILL while replying" in lines[0], lines
    assert "Traceback" not in err.decode()
    ask_json("hi", env=WARM)
    [fresh] = workers()
    assert fresh["pid"] != worker["pid"]


def test_a_stale_socket_is_replaced(demo_gguf, isolated_home):
    ask_json("hi", env=WARM)
    [worker] = workers()
    os.kill(worker["pid"], signal.SIGKILL)
    assert gone(worker["pid"])
    assert list(run_dir(isolated_home).glob("*.sock"))  # left behind by the kill
    again = ask_json("hi", env=WARM)
    assert again["text"]
    [fresh] = workers()
    assert fresh["pid"] != worker["pid"]


def test_two_concurrent_asks_share_one_worker(demo_gguf, isolated_home):
    procs = [start_starchat([*ASK, "-n", "16", "--json", f"count to {n}"], env=WARM) for n in (3, 5)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert len(workers()) == 1
    assert len(list(run_dir(isolated_home).glob("*.json"))) == 1


def test_an_open_runtime_folder_is_refused(demo_gguf, isolated_home):
    folder = run_dir(isolated_home)
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    res = run_starchat([*ASK, "-n", "2", "hi"])
    assert res.returncode == 1
    assert b"refusing the runtime folder" in res.stderr and b"chmod 700" in res.stderr


def test_a_runtime_folder_of_another_user_is_refused(monkeypatch):
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.engine.worker.registry import runtime_folder

    runtime_folder()  # created, ours
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    with pytest.raises(StarchatError, match="belongs to uid"):
        runtime_folder()


def test_an_error_in_the_worker_is_the_same_error_and_exit_code(demo_gguf):
    long = "word " * 3000
    off = run_starchat([*ASK, "--ctx", "256", long], env={"STARCHAT_WORKER": "off"})
    on = run_starchat([*ASK, "--ctx", "256", long])
    assert off.returncode == on.returncode == 7
    assert on.stderr == off.stderr and on.stderr.count(b"\n") == 1


def settings():
    from starchat_cli.services.config import Settings

    return Settings(ctx=1024, threads=1, prompt_cache=0)


def warm_engine():
    from starchat_cli.engine.worker.client import WorkerEngine
    from starchat_cli.models.store import Store
    from starchat_cli.services.runtime import engine_spec

    return WorkerEngine(engine_spec(Store().resolve("demo"), settings()), keep_alive=0)


def in_process():
    from starchat_cli.models.store import Store
    from starchat_cli.services.runtime import engine_for

    return engine_for(Store().resolve("demo"), settings())


def test_closing_a_generation_stops_the_worker_quickly(demo_gguf):
    from starchat_cli.engine.contract import StopReason
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message

    engine = warm_engine()
    try:
        info = engine.load()
        assert info.loaded and info.n_ctx == 1024 and info.prompt_format == "chatml"
        turns = [Message("user", "write a long story about a dragon")]
        gen = engine.generate(turns, GenerationParams(temperature=0, max_tokens=1500))
        next(gen), next(gen)
        assert gen.stats.generated_tokens >= 2  # counted as the chunks arrive (edit's progress)
        t0 = time.perf_counter()
        gen.close()
        assert time.perf_counter() - t0 < 1.0
        assert gen.stats.stop_reason is StopReason.CANCELLED and gen.stats.generated_tokens < 1500
        t0 = time.perf_counter()
        short = engine.generate(turns, GenerationParams(temperature=0, max_tokens=3))
        assert len(list(short)) and short.stats.stop_reason is StopReason.LENGTH
        assert short.stats.cached_tokens > 0 and time.perf_counter() - t0 < 5.0
        assert engine.count_tokens(turns) == in_process().count_tokens(turns)
        unread = engine.generate(turns, GenerationParams(temperature=0, max_tokens=1500))
        unread.close()  # closed before its first chunk: the worker stops too, the connection stays
        assert unread.stats.stop_reason is StopReason.CANCELLED
        connection = engine._link._sock
        assert list(engine.complete("1, 2, 3,", GenerationParams(temperature=0, max_tokens=2)))
        assert engine._link._sock is connection
    finally:
        engine.close()
    assert gone(engine.pid)


def test_a_cancel_event_reaches_the_worker(demo_gguf):
    from starchat_cli.engine.contract import StopReason
    from starchat_cli.engine.params import GenerationParams

    engine = warm_engine()
    cancel = threading.Event()
    try:
        gen = engine.complete(
            "Once upon a time", GenerationParams(temperature=0, max_tokens=1500), cancel=cancel
        )
        next(gen)
        cancel.set()
        rest = list(gen)
        assert gen.stats.stop_reason is StopReason.CANCELLED and len(rest) < 1400
    finally:
        engine.close()


# -- the protocol ---------------------------------------------------------------------------


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def test_frames_round_trip_and_bad_frames_are_protocol_errors():
    from starchat_cli.engine.worker.protocol import MAX_FRAME, ProtocolError, recv, send

    a, b = pair()
    send(a, {"op": "chunk", "text": "héllo"})
    assert recv(b) == {"op": "chunk", "text": "héllo"}
    a.sendall(struct.pack(">I", 5) + b"not j")
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        recv(b)
    a.sendall(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match="over the"):
        recv(b)
    a.sendall(struct.pack(">I", 2) + b"[]")
    with pytest.raises(ProtocolError, match="not a message"):
        recv(b)
    a.sendall(struct.pack(">I", 10) + b"{}")
    a.close()
    with pytest.raises(ProtocolError, match="closed 2 bytes into"):
        recv(b)
    assert recv(b) is None  # closed between frames


def test_an_error_frame_raises_the_same_type():
    from starchat_cli.core.errors import ContextOverflowError, ExitCode, FimUnsupportedError, StarchatError
    from starchat_cli.engine.worker.protocol import error_frame, raise_error

    for exc in (ContextOverflowError("too long"), FimUnsupportedError("no FIM")):
        with pytest.raises(type(exc)) as caught:
            raise_error(error_frame(exc))
        assert caught.value.message == exc.message and caught.value.exit_code == exc.exit_code
    with pytest.raises(StarchatError, match="unexpected KeyError in the model worker") as caught:
        raise_error(error_frame(KeyError("x")))
    assert caught.value.exit_code == ExitCode.ERROR


def test_a_model_larger_than_free_memory_is_said_before_it_starts(tmp_path):
    from starchat_cli.engine.worker.registry import memory_advice

    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as f:
        f.truncate(1 << 42)  # sparse: 4 TiB on paper, nothing on disk
    advice = memory_advice(str(huge), "huge")
    assert advice is not None and advice.startswith("huge needs about 4.4 TB of memory and ")
    assert memory_advice(str(tmp_path / "missing.gguf"), "x") is None
    small = tmp_path / "small.gguf"
    small.write_bytes(b"GGUF")
    assert memory_advice(str(small), "small") is None


def test_ask_through_a_worker_never_imports_llama_cpp_in_its_own_process(demo_gguf):
    proc = start_starchat([*ASK, "-n", "2", "hi"], python=("-X", "importtime"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out, err
    imported = {line.rsplit(b"|", 1)[-1].strip() for line in err.splitlines() if b"import time:" in line}
    assert b"starchat_cli.engine.worker.client" in imported
    assert not {name for name in imported if name.startswith((b"llama_cpp", b"starchat_cli.engine.llamacpp"))}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("30s", 30.0), ("1h", 3600.0), ("90", 90.0), (0, 0.0), ("forever", -1.0), (-1, -1.0)],
)
def test_keep_alive_durations(text, seconds):
    from starchat_cli.services.config import check_setting

    assert check_setting("keep_alive", text) == seconds


def test_a_bad_keep_alive_is_a_config_error():
    res = run_starchat([*ASK, "--keep-alive", "5 days", "hi"])
    assert res.returncode == 3
    assert b"option --keep-alive must be a duration such as 5m" in res.stderr
    res = run_starchat([*ASK, "hi"], env={"STARCHAT_KEEP_ALIVE": "-5"})
    assert res.returncode == 3 and b"STARCHAT_KEEP_ALIVE must be a duration" in res.stderr
