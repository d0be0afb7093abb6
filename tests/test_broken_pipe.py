"""A reader that goes away: every command writing to stdout ends 141, quietly.

Real pipes: the read end is closed before (or while) starchat writes, and the test reads
starchat's own exit status, not the shell's or head's.
"""

from __future__ import annotations

import os

import pytest

from .helpers.cli import start_starchat


def run_into_closed_pipe(args: list[str]) -> tuple[int, bytes]:
    """Run starchat with stdout on a pipe whose read end is already closed: (exit code, stderr)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = start_starchat(args, stdout=write_end)
        _, err = proc.communicate(timeout=300)
    finally:
        os.close(write_end)
    return proc.returncode, err


STDOUT_COMMANDS = [
    ["--help"],
    ["--version"],
    ["ask", "--help"],
    ["list"],
    ["list", "--json"],
    ["list", "--catalog"],
    ["paths"],
    ["paths", "--json"],
    ["info", "demo"],
    ["info", "demo", "--json"],
    ["sessions", "list"],
    ["sessions", "list", "--json"],
    ["sessions", "show", "{sid}"],
    ["sessions", "export", "{sid}", "-o", "-"],
    ["sessions", "search", "reverse"],
    ["sessions", "search", "reverse", "--json"],
    ["doctor"],
    ["doctor", "--json"],
    ["cache", "list"],
    ["cache", "list", "--json"],
    ["completion", "bash"],
]


@pytest.mark.parametrize("args", STDOUT_COMMANDS, ids=" ".join)
def test_closed_pipe_exits_141_quietly(args, saved_sessions, demo_gguf):
    code, err = run_into_closed_pipe([a.replace("{sid}", saved_sessions[0]) for a in args])
    assert code == 141, err.decode()
    assert b"Traceback" not in err and b"Exception ignored" not in err and b"BrokenPipe" not in err


@pytest.mark.parametrize("extra", [[], ["--json"], ["--stats"]], ids=lambda e: " ".join(e) or "plain")
def test_ask_into_closed_pipe(extra, demo_gguf):
    code, err = run_into_closed_pipe(["ask", "-m", "demo", "-t", "0", "--max-tokens", "24", *extra, "hi"])
    assert code == 141, err.decode()
    assert b"Traceback" not in err and b"Exception ignored" not in err
