"""Shell completion: `starchat completion bash|zsh|fish` and click's completion protocol.

The bash test sources the printed script in a real bash and calls the completion function
as bash does on Tab; zsh and fish are not installed here, so their scripts are checked for
the protocol they speak and the protocol itself is driven with the same variables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from starchat_cli.core.errors import ExitCode

from .helpers.cli import REPO, run_starchat
from .test_import_hygiene import loaded_after  # noqa: F401  (keeps the helper importable here)


def complete(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starchat_cli"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def starchat_on_path(tmp_path) -> Path:
    """A `starchat` executable for this checkout (the script completes the name `starchat`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "starchat"
    exe.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m starchat_cli "$@"\n')
    exe.chmod(0o755)
    return bin_dir


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(
    ("words", "cword", "expected", "absent"),
    [
        ("starchat a", 1, {"ask", "add"}, {"serve"}),
        ("starchat sessions ", 2, {"list", "show", "search", "rm", "export"}, {"ask"}),
        ("starchat ask --ma", 2, {"--max-tokens"}, {"--model"}),
    ],
)
def test_bash_tab_completes(starchat_on_path, words, cword, expected, absent):
    script = run_starchat(["completion", "bash"])
    assert script.returncode == 0, script.stderr.decode()
    body = script.stdout.decode()
    assert "complete -o default -F _starchat_completion starchat" in body
    empty_last = '""' if words.endswith(" ") else ""  # the word being typed is still empty
    driver = (
        "source <(starchat completion bash)\n"
        f"COMP_WORDS=({words}{empty_last}); COMP_CWORD={cword}\n"
        "_starchat_completion starchat\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    res = subprocess.run(
        ["bash", "-c", driver],
        env={**os.environ, "PATH": f"{starchat_on_path}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    got = set(res.stdout.split())
    assert expected <= got, (got, res.stderr)
    assert not (absent & got)


def test_bash_protocol_lists_ask():
    res = complete({"_STARCHAT_COMPLETE": "complete_bash", "COMP_WORDS": "starchat a", "COMP_CWORD": "1"})
    assert res.returncode == 0, res.stderr
    assert "ask" in res.stdout.split() and "serve" not in res.stdout.split()


def test_zsh_protocol_and_script():
    res = complete({"_STARCHAT_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "starchat se"})
    assert res.returncode == 0, res.stderr
    assert '"serve":' in res.stdout and '"sessions":' in res.stdout and '"ask":' not in res.stdout
    script = run_starchat(["completion", "zsh"]).stdout.decode()
    assert script.startswith("#compdef starchat") and "_STARCHAT_COMPLETE=complete_zsh" in script


def test_fish_protocol_and_script():
    res = complete(
        {
            "_STARCHAT_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "starchat sessions ",
        }
    )
    assert res.returncode == 0, res.stderr
    names = {line.split("\t")[0] for line in res.stdout.splitlines()}
    assert {"list", "show", "export"} <= names and "ask" not in names
    script = run_starchat(["completion", "fish"]).stdout.decode()
    assert "complete --command starchat" in script and "_STARCHAT_COMPLETE=complete_fish" in script


def test_install_writes_where_the_shell_loads_it(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": ""}
    for shell, path in [
        ("bash", tmp_path / ".local/share/bash-completion/completions/starchat"),
        ("zsh", tmp_path / ".zfunc/_starchat"),
        ("fish", tmp_path / ".config/fish/completions/starchat.fish"),
    ]:
        res = run_starchat(["completion", shell, "--install"], env=env)
        assert res.returncode == 0, res.stderr.decode()
        assert str(path) in res.stdout.decode()
        assert path.read_text() == run_starchat(["completion", shell]).stdout.decode()


def test_unknown_shell_is_one_line():
    res = run_starchat(["completion", "tcsh"])
    assert res.returncode == ExitCode.INPUT
    err = res.stderr.decode()
    assert err.count("\n") == 1 and "bash, zsh, fish" in err


def test_help_lists_the_command_and_registers_no_shell_class():
    """Shell classes are registered only when a shell asks (typer itself is imported anyway)."""
    code = (
        "import sys, runpy\n"
        "from typer._click import shell_completion as sc\n"
        "sys.argv = ['starchat', '--help']\n"
        "try:\n    runpy.run_module('starchat_cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "sys.stderr.write(repr(sorted(k for k in sc._available_shells if k in ('zsh', 'fish'))))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, env=os.environ
    )
    assert res.stderr.strip().endswith("[]"), res.stderr
    assert "completion" in res.stdout
