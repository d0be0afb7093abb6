"""The Engine contract: the local engine, the remote engine and the tests' fake all implement it,
and the faces can tell nothing from what they read (the same greedy text local and remote)."""

from __future__ import annotations

import pytest

from starchat_cli.engine.contract import Engine, EngineInfo
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import Message

from .helpers.fake_engine import FakeEngine
from .helpers.servers import start_server, stop_server

GREEDY = GenerationParams(max_tokens=24, temperature=0.0)
QUESTION = [Message("user", "Write a Python function that adds two numbers.")]


@pytest.fixture(scope="module")
def plain_server(demo_gguf, tmp_path_factory):
    """`starchat serve -m demo` with no key and the same context as the local demo engine."""
    home = str(tmp_path_factory.mktemp("contract-home"))
    proc, base = start_server("--ctx", "2048", env={"STARCHAT_HOME": home})
    yield base
    stop_server(proc)


def test_every_backend_is_an_engine(demo_engine):
    from starchat_cli.engine.remote.engine import RemoteEngine

    for engine in (demo_engine, RemoteEngine("http://127.0.0.1:9", model="m"), FakeEngine("hi")):
        assert isinstance(engine, Engine), type(engine).__name__


def test_a_shape_without_complete_is_not_an_engine():
    class HalfEngine:
        info = EngineInfo(name="x", location="")

        def load(self) -> EngineInfo:
            return self.info

        def generate(self, turns, params=None, **kw):
            raise NotImplementedError

    assert not isinstance(HalfEngine(), Engine)


def test_local_info_before_and_after_load(demo_gguf):
    from starchat_cli.models.store import Store
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import engine_for

    engine = engine_for(Store().resolve("demo"), Settings(ctx=1024, threads=1))
    before = engine.info
    assert before.name == "demo" and not before.loaded and before.n_ctx == 0 and not before.remote
    assert before.location == str(demo_gguf)
    assert (
        demo_gguf.name in before.aliases and demo_gguf.stem in before.aliases and "demo" not in before.aliases
    )
    after = engine.load()
    assert after.loaded and after.n_ctx == 1024 and after.prompt_format == "chatml"
    assert after.placement  # the GPU choice in words, e.g. "this llama.cpp build has no GPU offload"
    assert after.default_system == before.default_system
    assert engine.load() == engine.info  # idempotent: a second load changes nothing


def test_open_engine_is_local_unless_an_endpoint_is_set(demo_gguf):
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.remote.engine import RemoteEngine
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import open_engine

    local = open_engine(Settings(model="demo"), True).engine
    assert isinstance(local, LocalEngine) and local.info.name == "demo"
    remote = open_engine(Settings(model="demo", endpoint="http://127.0.0.1:9"), True).engine
    assert isinstance(remote, RemoteEngine) and remote.info.remote and remote.info.name == "demo"
    served = open_engine(Settings(model="demo", endpoint="http://127.0.0.1:9"), True, local_only=True).engine
    assert isinstance(served, LocalEngine)


def test_remote_load_names_the_servers_model(plain_server):
    from starchat_cli.engine.remote.engine import RemoteEngine

    engine = RemoteEngine(plain_server)
    assert engine.info.name == "" and not engine.info.loaded
    info = engine.load()
    assert info.name == "demo" and info.loaded and info.remote and info.location == f"{plain_server}/v1"


def test_local_and_remote_give_the_same_greedy_text(demo_engine, plain_server):
    """One contract, two backends: the same model gives the same greedy reply, chat and raw."""
    from starchat_cli.engine.remote.engine import RemoteEngine

    remote = RemoteEngine(plain_server)
    local_chat = demo_engine.generate(QUESTION, GREEDY)
    remote_chat = remote.generate(QUESTION, GREEDY)
    assert "".join(local_chat) == "".join(remote_chat) and local_chat.text.strip()
    assert remote_chat.stats.generated_tokens == local_chat.stats.generated_tokens
    assert remote_chat.stats.stop_reason == local_chat.stats.stop_reason

    prompt = "def fibonacci(n):\n"
    local_raw = demo_engine.complete(prompt, GREEDY)
    remote_raw = remote.complete(prompt, GREEDY)
    assert "".join(local_raw) == "".join(remote_raw) and local_raw.text.strip()
    assert remote_raw.stats.prompt_tokens == local_raw.stats.prompt_tokens > 3


def test_cancel_reaches_a_raw_completion(demo_engine):
    import threading

    cancel = threading.Event()
    cancel.set()
    gen = demo_engine.complete("def f():\n", GenerationParams(max_tokens=50), cancel=cancel)
    assert "".join(gen) == "" and gen.stats.stop_reason == "cancelled"
