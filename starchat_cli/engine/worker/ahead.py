"""Starting a worker process, and starting one ahead of need.

    proc = spawn(log)                             # a worker that waits for its launch line on stdin
    launch(proc, [key, "300", spec_json, pid])    # it binds KEY's socket and loads the model
    start_ahead()    # cli/app.py: for ask/edit/complete, before even typer is imported
    take_ahead(log)  # client.py, when no worker answers: the one started ahead (its log moved to ``log``)

A worker spends its first tenth of a second importing Python modules and llama.cpp; started
ahead, it does so while the command still imports its own and resolves its settings. Only
started when no worker runs at all (a call is then cold for sure), and never for
``STARCHAT_WORKER=off`` or ``STARCHAT_ENDPOINT``; one not taken exits with the command (its stdin
closes). Light on purpose: importing it costs nothing the command would not import anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import starchat_cli
from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.worker import registry

_ahead: list[tuple[subprocess.Popen[bytes], Path]] = []  # at most one


def spawn(log: Path) -> subprocess.Popen[bytes]:
    """A worker process in its own session (``python -m starchat_cli.engine.worker``), output to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    root = str(Path(starchat_cli.__file__).resolve().parent.parent)  # this very code, not another install
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "PYDANTIC_DISABLE_PLUGINS": "__all__",  # no entry-point scan at start: starchat uses none
    }
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "starchat_cli.engine.worker"],
            stdin=subprocess.PIPE,
            stdout=fd,
            stderr=fd,
            cwd="/",
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(fd)


def launch(proc: subprocess.Popen[bytes], line: list[str]) -> None:
    """Tell a spawned worker what to run: key, keep-alive, spec JSON, the client's pid."""
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(line).encode() + b"\n")
    proc.stdin.close()


def start_ahead() -> None:
    if (
        _ahead
        or os.environ.get("STARCHAT_WORKER", "").lower() == "off"
        or os.environ.get("STARCHAT_ENDPOINT")
    ):
        return
    try:
        folder = registry.runtime_folder()
        if any(folder.glob("*.sock")):
            return  # most likely warm: the client connects, or starts one itself
        log = folder / f"ahead-{os.getpid()}.log"
        _ahead.append((spawn(log), log))
    except (StarchatError, OSError):
        return  # the client's own start says what is wrong


def take_ahead(log: Path) -> subprocess.Popen[bytes] | None:
    """The worker started ahead, still waiting (its log renamed to ``log``), or None."""
    while _ahead:
        proc, ahead_log = _ahead.pop()
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.replace(ahead_log, log)
            return proc
    return None


def release_ahead() -> None:
    """A worker started ahead that nobody took: it exits as its stdin closes."""
    while _ahead:
        proc, log = _ahead.pop()
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
            log.unlink()


__all__ = ["launch", "release_ahead", "spawn", "start_ahead", "take_ahead"]
