"""``starchat completion bash|zsh|fish``: Tab completion of commands, options and values.

The completion itself is click's protocol, which Typer answers whenever ``_STARCHAT_COMPLETE``
is set (see ``app.main``); the shell classes are registered only then, so nothing of this
is imported by ``starchat --help`` or any other command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

COMPLETE_VAR = "_STARCHAT_COMPLETE"
SHELLS = ("bash", "zsh", "fish")

COMPLETION_HELP = """\
Print (or --install) the Tab-completion script for bash, zsh or fish.

\b
  eval "$(starchat completion bash)"               # this shell only; add it to ~/.bashrc to keep it
  starchat completion zsh > ~/.zfunc/_starchat      # with fpath+=~/.zfunc in ~/.zshrc
  starchat completion fish | source
  starchat completion --install                     # the shell in $SHELL, where it loads by itself
"""


def register(app: typer.Typer) -> None:
    app.command("completion", help=COMPLETION_HELP, no_args_is_help=False)(completion)


def install_path(shell: str) -> Path:
    """Where each shell loads a completion by itself (bash: the bash-completion package)."""
    home = Path.home()
    if shell == "bash":
        data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
        return data / "bash-completion" / "completions" / "starchat"
    if shell == "zsh":
        return home / ".zfunc" / "_starchat"
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return config / "fish" / "completions" / "starchat.fish"


def script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="starchat", complete_var=COMPLETE_VAR, shell=shell) + "\n"


def completion(
    shell: Optional[str] = typer.Argument(
        None, help="bash, zsh or fish. [default: the shell in $SHELL]", show_default=False
    ),
    install: bool = typer.Option(
        False, "--install", help="Write the script where the shell loads it by itself, and say where."
    ),
) -> None:
    from starchat_cli.core.errors import InputError

    chosen = shell or Path(os.environ.get("SHELL") or "").name
    if chosen not in SHELLS:
        raise InputError(
            f"no completion for shell {chosen or '(none: $SHELL is not set)'!r}: "
            f"name one of {', '.join(SHELLS)} (starchat completion bash)"
        )
    text = script(chosen)
    if not install:
        print(text, end="")
        return
    from starchat_cli.core.fsutil import atomic_write_text

    target = install_path(chosen)
    atomic_write_text(target, text)
    print(f"wrote {target}")
    if chosen == "zsh":
        print("add to ~/.zshrc (once): fpath+=~/.zfunc; autoload -Uz compinit; compinit")
    elif chosen == "bash":
        print("loaded by the bash-completion package in new shells; without it, add to ~/.bashrc:")
        print(f"  source {target}")
    else:
        print("fish loads it in new shells")


def enable_shell_classes() -> None:
    """Register Typer's bash/zsh/fish completion classes (only when a shell asks to complete)."""
    from typer._completion_classes import completion_init

    completion_init()
