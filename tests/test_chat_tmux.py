"""`starchat chat` for real: the demo model in a tmux terminal driven by send-keys / capture-pane."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.tmux]

WIDTH, HEIGHT = 100, 32
PATIENCE = 300.0  # seconds to wait for a screen state before failing (never asserted on)


class Tmux:
    def __init__(self, socket: str, name: str) -> None:
        exe = shutil.which("tmux")
        if exe is None:
            pytest.fail("tmux is not installed (apt-get install tmux; .ci/run installs it)")
        self.exe = exe
        self.socket = socket
        self.name = name

    def run(self, *args: str) -> str:
        out = subprocess.run(
            [self.exe, "-L", self.socket, *args], capture_output=True, text=True, check=True, timeout=30
        )
        return out.stdout

    def start(self, command: str, cwd: Path) -> None:
        self.run(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            self.name,
            "-x",
            str(WIDTH),
            "-y",
            str(HEIGHT),
            "-c",
            str(cwd),
            command,
        )

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def wait_for(self, predicate, what: str) -> str:
        deadline = time.monotonic() + PATIENCE
        screen = ""
        while time.monotonic() < deadline:
            try:
                screen = self.screen()
            except subprocess.CalledProcessError:
                break  # the pane is gone: the app exited
            if predicate(screen):
                return screen
            time.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}; the screen was:\n{screen}")

    def kill(self) -> None:
        subprocess.run([self.exe, "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def test_chat_in_tmux_replies_and_saves_the_session(demo_gguf, isolated_home, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "STARCHAT_HOME": str(isolated_home),
        "HF_HUB_OFFLINE": "1",
        "TERM": "xterm-256color",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = (
        f"env {exports} {shlex.quote(sys.executable)} -m starchat_cli chat -m demo -t 0 -n 40 --ctx 2048"
    )
    tmux = Tmux(f"starchat-test-{os.getpid()}", "chat")
    try:
        tmux.start(command, work)
        tmux.wait_for(lambda s: "Chatting with demo" in s and "ctx 0/2,048" in s, "the chat to open and load")
        tmux.keys("-l", "Write a Python function that adds two numbers.")
        tmux.keys("Enter")
        screen = tmux.wait_for(lambda s: "tok/s" in s and "– tok/s" not in s, "the reply to finish")
        assert "╭─ you" in screen and "╭─ demo" in screen
        assert "Write a Python function that adds two numbers." in screen
        reply_box = screen.split("╭─ demo", 1)[1].split("╰", 1)[0]
        assert any(ch.isalnum() for ch in reply_box), screen
        tmux.keys("C-q")
        tmux.wait_for(lambda s: "╭─ demo" not in s, "the app to quit")
    finally:
        tmux.kill()

    db = sqlite3.connect(isolated_home / "sessions.sqlite3")
    sessions = db.execute("SELECT id, model, title FROM sessions").fetchall()
    assert len(sessions) == 1 and sessions[0][1] == "demo"
    assert sessions[0][2] == "Write a Python function that adds two numbers."
    rows = db.execute("SELECT role, content, stopped FROM messages ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[0][1] == "Write a Python function that adds two numbers."
    assert rows[1][1].strip() and rows[1][2] == 0
