"""The StarCoder2 base models in the catalog: completion models, listed as such, refused for chat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode
from starchat_cli.models.catalog import CATALOG, COMPLETION_MODELS, STARCHAT_FAMILY
from starchat_cli.services.pull import parse_target

runner = CliRunner()

# Read from the Hub's file listings (QuantFactory/starcoder2-*-GGUF, "Files and versions").
PREBUILT = {
    "starcoder2-3b": ("QuantFactory/starcoder2-3b-GGUF", "starcoder2-3b.Q4_K_M.gguf"),
    "starcoder2-7b": ("QuantFactory/starcoder2-7b-GGUF", "starcoder2-7b.Q4_K_M.gguf"),
    "starcoder2-15b": ("QuantFactory/starcoder2-15b-GGUF", "starcoder2-15b.Q4_K_M.gguf"),
}


def test_starcoder2_base_models_are_completion_models():
    assert set(COMPLETION_MODELS) == set(PREBUILT)
    for name, (repo, q4) in PREBUILT.items():
        spec = CATALOG[name]
        assert spec.task == "complete" and not spec.chats
        assert spec.hub_repo == f"bigcode/{name}"
        assert spec.hf_architecture == "Starcoder2ForCausalLM" and spec.llama_arch == "starcoder2"
        assert spec.context_length == 16384
        assert spec.prebuilt.repo == repo and spec.prebuilt.filename("Q4_K_M") == q4
        assert spec.prebuilt.filename("Q8_0") == q4.replace("Q4_K_M", "Q8_0")
        assert name not in STARCHAT_FAMILY  # never a chat fallback
    assert all(CATALOG[n].chats for n in STARCHAT_FAMILY)


def test_pull_targets_prebuilt_and_from_source():
    t = parse_target("starcoder2-7b")
    assert (t.repo, t.quant, t.family, t.from_source) == (
        "QuantFactory/starcoder2-7b-GGUF",
        "Q4_K_M",
        "starcoder2-7b",
        False,
    )
    t = parse_target("bigcode/starcoder2-3b", from_source=True)
    assert t.family == "starcoder2-3b" and t.from_source and t.repo == "bigcode/starcoder2-3b"
    t = parse_target("starcoder2-15b", "q5_k_m", from_source=True)
    assert t.repo == "bigcode/starcoder2-15b" and t.quant == "Q5_K_M"
    assert t.entry_name("Q4_K_M") == "starcoder2-15b" and t.entry_name("Q8_0") == "starcoder2-15b:Q8_0"


def test_list_catalog_says_which_chat_and_which_complete():
    res = runner.invoke(app, ["list", "--catalog"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
    assert "USE" in res.stdout.splitlines()[0]
    assert "complete" in lines["starcoder2-3b"] and "chat" not in lines["starcoder2-3b"]
    assert "chat" in lines["starchat2"]
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["list", "--catalog", "--json"]).stdout)}
    assert rows["starcoder2-15b"]["task"] == "complete" and rows["starchat2"]["task"] == "chat"
    assert rows["demo"]["task"] == "chat"


def test_ask_with_a_completion_model_is_refused_before_any_download():
    res = runner.invoke(app, ["ask", "-m", "starcoder2-3b", "hello"])
    assert res.exit_code == ExitCode.INPUT, res.output
    assert "starcoder2-3b is a completion model" in res.output
    assert "starchat complete" in res.output and "not downloaded" not in res.output
    res = runner.invoke(app, ["ask", "-m", "starcoder2-3b:Q8_0", "hello"])
    assert res.exit_code == ExitCode.INPUT


def test_open_engine_for_chat_refuses_completion_models():
    """What `chat` (and its model switch) call; serve and the completion commands do not ask for chat."""
    from starchat_cli.core.errors import InputError
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import open_engine

    with pytest.raises(InputError, match="starcoder2-7b is a completion model"):
        open_engine(Settings(model="starcoder2-7b"), True, chat_only=True)
    with pytest.raises(Exception, match="not downloaded"):  # not refused: it is just missing
        open_engine(Settings(model="starcoder2-7b"), True)


def test_a_registered_completion_model_is_refused_and_never_a_fallback(demo_gguf: Path):
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import choose_model

    res = runner.invoke(app, ["add", str(demo_gguf), "--name", "mybase", "--family", "starcoder2-3b"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ask", "-m", "mybase", "hello"])
    assert res.exit_code == ExitCode.INPUT and "completion model" in res.output
    assert choose_model(Settings(), explicit=False).model.name == "demo"  # not the completion model
    # --format forces a chat format: the user asked for it.
    res = runner.invoke(app, ["ask", "-m", "mybase", "--format", "chatml", "--max-tokens", "2", "hi"])
    assert res.exit_code == 0, res.output


def test_convert_as_a_completion_model_writes_no_chat_template(tmp_path: Path, tiny_models):
    from converters.synthetic import TinySpec
    from starchat_cli.server.ollama_model import ModelFacts

    hf = tiny_models.checkpoint(TinySpec("starcoder2", tied=True, chat="none", seed=3)).dir
    out = tmp_path / "base.gguf"
    res = runner.invoke(
        app, ["convert", str(hf), "-o", str(out), "--family", "starcoder2-3b", "--register", "b"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(runner.invoke(app, ["info", "b", "--json"]).stdout)
    assert info["family"] == "starcoder2-3b" and info["architecture"] == "starcoder2"
    assert info["chat_template"] is None
    assert ModelFacts.read(str(out)).capabilities() == ["completion", "insert"]  # FIM tokens kept


def test_the_prebuilt_file_is_picked_from_the_repos_real_listing():
    """File names as QuantFactory/starcoder2-3b-GGUF lists them (Q4_K_M is 1.89 GB there)."""
    from starchat_cli.models.hub import RemoteFile
    from starchat_cli.services.pull import pick_gguf

    quants = [
        "Q2_K",
        "Q3_K_L",
        "Q3_K_M",
        "Q3_K_S",
        "Q4_0",
        "Q4_1",
        "Q4_K_M",
        "Q4_K_S",
        "Q5_0",
        "Q5_K_M",
        "Q8_0",
    ]
    files = [RemoteFile(f"starcoder2-3b.{q}.gguf", 1) for q in quants] + [RemoteFile("README.md", 1)]
    spec = CATALOG["starcoder2-3b"]
    for quant in ("Q4_K_M", "Q8_0", "Q4_0"):
        picked = pick_gguf(files, quant, None, spec.prebuilt.repo)
        assert [f.name for f in picked] == [spec.prebuilt.filename(quant)]
