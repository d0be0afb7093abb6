"""The engine of a running command: the one place a command turns its flags into an engine and
says what the engine has to say while it starts (a fallback model, load warnings, --verbose).

    settings, engine = open_for(command, Use.CHAT)    # flags > env > config file > defaults
    info = load(engine, verbose=verbose)               # a spinner on a terminal, then the notes

The engine modules are imported inside the functions: ``starchat --help`` stays light.
"""

from __future__ import annotations

import contextlib
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterator

import click
import typer

from starchat_cli.cli.options import setting_flags
from starchat_cli.cli.terminal import note

if TYPE_CHECKING:
    from starchat_cli.engine.contract import Engine, EngineInfo
    from starchat_cli.services.config import Settings


class Use(Enum):
    """What the command needs of the model, which decides how one is chosen."""

    ASK = "ask"  # one question: a completion-only model is refused; kept warm in a worker (ask)
    CHAT = "chat"  # a conversation: a completion-only model is refused (chat)
    ANY = "any"  # any model the user names or the default; kept warm in a worker (edit)
    COMPLETE = "complete"  # fill-in-the-middle: a completion model first; kept warm (complete)
    SERVE = "serve"  # a model of this machine, never an --endpoint (serve)


def settings_for(command: typer.Context, **overrides: Any) -> tuple[Settings, bool]:
    """The settings of ``command`` (its flags, with ``overrides``) and whether the user named the model."""
    from starchat_cli.services.runtime import load_settings

    return load_settings(setting_flags(command, **overrides))


def open_for(command: typer.Context, use: Use, **overrides: Any) -> tuple[Settings, Engine]:
    """The settings of ``command`` and an engine for them, not loaded yet."""
    settings, explicit = settings_for(command, **overrides)
    return settings, open_with(settings, explicit, use)


def open_with(settings: Settings, explicit: bool, use: Use) -> Engine:
    """An engine for ``settings``; a note on stderr when starchat picked the model itself."""
    from starchat_cli.services import runtime

    # The model runs in its worker process: warm for the next call, and a crash in llama.cpp is
    # healed or said in one line, never the end of the chat or of the server's other requests
    # (README: Keep the model warm).
    worker = use in (Use.ASK, Use.ANY, Use.COMPLETE, Use.CHAT, Use.SERVE)
    notify = None if use is Use.CHAT else note  # the chat shows the engine's warnings itself
    if use is Use.COMPLETE:
        from starchat_cli.services.completion import open_completion_engine

        opened = open_completion_engine(settings, explicit, worker=worker, notify=notify)
    else:
        opened = runtime.open_engine(
            settings,
            explicit,
            chat_only=use in (Use.ASK, Use.CHAT),
            local_only=use is Use.SERVE,
            worker=worker,
            notify=notify,
        )
    if opened.note:
        note(opened.note)
    current = click.get_current_context(silent=True)
    if current is not None:  # a worker's connection ends with the command (keep-alive 0: the worker too)
        current.call_on_close(opened.engine.close)
    return opened.engine


def load(engine: Engine, *, verbose: bool = False) -> EngineInfo:
    """Load the model (a spinner while a local one loads on a terminal), then say its warnings and,
    with ``verbose``, which file, format, context and placement it runs with."""
    before = engine.info
    with _spinner(f"loading {before.name}…", not (before.loaded or before.remote)):
        info = engine.load()
    for warning in info.warnings:
        note(warning)
    if verbose:
        note(f"model {info.name}: {info.location}")
        note(
            f"format {info.prompt_format}; context {info.n_ctx} tokens; "
            f"flash attention {'on' if info.flash_attn else 'off'}"
        )
        note(f"gpu: {info.placement}")
        if info.cpu_kernels:
            note(info.cpu_kernels)
    return info


def say_notes(engine: Engine) -> None:
    """The engine's notes after the work (e.g. the prompt cache it wrote), for --verbose."""
    for line in engine.info.notes:
        note(line)


@contextlib.contextmanager
def _spinner(text: str, show: bool) -> Iterator[None]:
    """A rich spinner on stderr, only when ``show`` and stderr is a terminal."""
    try:
        show = show and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        show = False
    if not show:
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(text, spinner="dots"):
        yield


__all__ = ["Use", "load", "open_for", "open_with", "say_notes", "settings_for"]
