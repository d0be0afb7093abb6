"""The engine never imports a UI, and `starchat --help` never imports the heavy libraries.

Each check runs in a fresh interpreter and inspects sys.modules.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import pytest

import converters
import starchat_cli.chat
import starchat_cli.core
import starchat_cli.edits
import starchat_cli.engine
import starchat_cli.models
import starchat_cli.services

UI = ("textual", "typer", "rich", "click")
HEAVY = (
    "llama_cpp",
    "torch",
    "textual",
    "transformers",
    "numpy",
    "gguf",
    "huggingface_hub",
    "jinja2",
    "rich",
    "httpx",
    "starlette",
    "pydantic",
)

# Everything below the faces (cli, tui, server): the base, the domain packages and the services,
# sub-packages (engine/llamacpp/, ...) included.
BELOW_FACES = (
    starchat_cli.core,
    starchat_cli.engine,
    starchat_cli.models,
    starchat_cli.chat,
    starchat_cli.edits,
    starchat_cli.services,
)
CORE_MODULES = sorted(
    m.name for pkg in BELOW_FACES for m in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}.")
)
CONVERTER_MODULES = sorted(
    ["converters", *(f"converters.{m.name}" for m in pkgutil.iter_modules(converters.__path__))]
)


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout.strip().splitlines()[-1])}


def test_core_modules_are_discovered():
    assert {
        "starchat_cli.engine.llamacpp.engine",
        "starchat_cli.chat.sessions",
        "starchat_cli.services.runtime",
    } <= set(CORE_MODULES)
    assert len(CORE_MODULES) >= 20


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_ui(module):
    loaded = loaded_after(f"import {module}")
    assert not loaded & set(UI), f"{module} pulled in {sorted(loaded & set(UI))}"


def test_converter_modules_are_discovered():
    assert {"converters.convert", "converters.quantize", "converters.safetensors_io"} <= set(
        CONVERTER_MODULES
    )


@pytest.mark.parametrize("module", CONVERTER_MODULES)
def test_converter_module_imports_no_ui(module):
    """converters/ is a library: no typer/rich/textual, and torch only for .bin checkpoints."""
    loaded = loaded_after(f"import {module}")
    assert not loaded & set(UI), f"{module} pulled in {sorted(loaded & set(UI))}"
    assert not loaded & {"torch", "transformers", "llama_cpp"}, sorted(loaded & set(HEAVY))
    assert "starchat_cli" not in loaded, f"{module} imports starchat_cli: converters must stand alone"


def test_core_engine_does_not_import_llama_cpp_until_used():
    assert "llama_cpp" not in loaded_after(
        "import starchat_cli.engine.llamacpp.engine, starchat_cli.engine.llamacpp.backend,"
        " starchat_cli.services.runtime"
    )


def test_help_imports_nothing_heavy():
    probe = (
        "import sys\n"
        "sys.argv = ['starchat', '--help']\n"
        "from starchat_cli.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = loaded_after(probe)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    "command",
    [
        "ask",
        "list",
        "info",
        "add",
        "rm",
        "paths",
        "doctor",
        "convert",
        "quantize",
        "serve",
        "pull",
        "cache",
        "edit",
        "undo",
    ],
)
def test_subcommand_help_imports_nothing_heavy(command):
    probe = (
        "import sys\n"
        f"sys.argv = ['starchat', '{command}', '--help']\n"
        "from starchat_cli.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = loaded_after(probe)
    assert not loaded & {"llama_cpp", "torch", "textual"}, sorted(loaded & set(HEAVY))


def test_the_probe_can_fail():
    """The same probe does see a heavy import when one happens."""
    assert "llama_cpp" in loaded_after("import llama_cpp")


def test_the_lazy_root_group_prints_the_help_typer_builds():
    """`starchat --help` lists the commands from cli/app.py's COMMANDS table without importing
    them; the text is byte for byte the help of typer's eager group (at any width), no command
    module is imported, and a subcommand still parses its own options."""
    eager = "import sys; sys.argv = ['starchat', '--help']\nfrom starchat_cli.cli.app import app\napp(prog_name='starchat')"
    for width in ("80", "100", "250"):
        env = {**os.environ, "COLUMNS": width}
        want = subprocess.run([sys.executable, "-c", eager], capture_output=True, text=True, env=env)
        got = subprocess.run(
            [sys.executable, "-m", "starchat_cli", "--help"], capture_output=True, text=True, env=env
        )
        assert got.returncode == want.returncode == 0
        assert got.stdout == want.stdout and "edit" in got.stdout and "sessions" in got.stdout
    probe = (
        "import sys; sys.argv = ['starchat', '--help']\n"
        "from starchat_cli.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('starchat_cli.cli.')), file=sys.stderr)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stderr.strip() == "['starchat_cli.cli.app']"
    sub = subprocess.run(
        [sys.executable, "-m", "starchat_cli", "sessions", "list", "--limit", "0"],
        capture_output=True,
        text=True,
    )
    assert sub.returncode == 3 and "--limit" in sub.stderr
