"""`starchat chat` for real: the demo model in a tmux terminal driven by send-keys / capture-pane."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
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
    tmux = Tmux(f"starchat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}", "chat")  # a server per test
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


def test_a_worker_killed_mid_reply_keeps_the_chat_and_the_next_reply_works(
    demo_gguf, isolated_home, tmp_path
):
    """The chat's model runs in a worker process: kill -9 it mid-reply and the chat stays up, the
    earlier messages stay on screen and in the session, the error is one line, and the next reply
    starts a fresh worker."""
    import json
    import signal

    from tests.helpers.cli import run_starchat

    env = {
        "STARCHAT_HOME": str(isolated_home),
        "STARCHAT_AMX": os.environ.get("STARCHAT_AMX", "auto"),
        "STARCHAT_KEEP_ALIVE": "0",
        "HF_HUB_OFFLINE": "1",
        "TERM": "xterm-256color",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = (
        f"env {exports} {shlex.quote(sys.executable)} -m starchat_cli chat -m demo -t 0 -n 200 --ctx 2048"
    )
    tmux = Tmux(f"starchat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}", "chat")  # a server per test
    try:
        tmux.start(command, tmp_path)
        tmux.wait_for(lambda s: "Chatting with demo" in s and "ctx 0/2,048" in s, "the chat to open and load")
        tmux.keys("-l", "Say hello.")
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "tok/s" in s and "– tok/s" not in s, "the first reply to finish")
        [worker] = json.loads(run_starchat(["ps", "--json"]).stdout)["workers"]

        tmux.keys("-l", "Write a very long story about a dragon and a knight.")
        tmux.keys("Enter")

        def streaming(s: str) -> bool:
            box = s[s.rfind("╭─ demo") :].split("╰", 1)[0] if s.count("╭─ demo") == 2 else ""
            return "generating" in s and any(ch.isalnum() for ch in box.replace("demo", ""))

        tmux.wait_for(streaming, "the second reply to stream")
        os.kill(worker["pid"], signal.SIGKILL)
        screen = tmux.wait_for(lambda s: "SIGKILL" in s, "the error to be shown")
        assert "Say hello." in screen or "Write a very long story" in screen

        tmux.keys("-l", "Say goodbye.")
        tmux.keys("Enter")
        finished = re.compile(r"\d tok/s")  # the status line's speed: "– tok/s" while one streams
        screen = tmux.wait_for(
            lambda s: s.rfind("╭─ demo") > s.rfind("Say goodbye.") > 0 and finished.search(s) is not None,
            "the third reply to finish",
        )
        last = screen[screen.rfind("╭─ demo") :].split("╰", 1)[0]
        assert any(ch.isalnum() for ch in last.replace("demo", "")), screen
        [fresh] = json.loads(run_starchat(["ps", "--json"]).stdout)["workers"]
        assert fresh["pid"] != worker["pid"]
        tmux.keys("C-q")
        tmux.wait_for(lambda s: "╭─ demo" not in s, "the app to quit")
    finally:
        tmux.kill()

    db = sqlite3.connect(isolated_home / "sessions.sqlite3")
    rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    roles = [r[0] for r in rows]
    assert roles[:2] == ["user", "assistant"] and rows[0][1] == "Say hello." and rows[1][1].strip()
    assert rows[-2] == ("user", "Say goodbye.") and roles[-1] == "assistant" and rows[-1][1].strip()
    assert "Write a very long story about a dragon and a knight." in [r[1] for r in rows]
