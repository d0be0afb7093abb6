"""`starchat edit` and `starchat complete` on files that are not plain, readable, writable text.

Real processes of the CLI throughout: a loopback OpenAI-compatible server plays the model
(`--endpoint`), a named pipe and /dev/zero are the real thing, an unreadable file is read by
an unprivileged user (setpriv when the tests run as root), a terminal that goes away is a pty
whose master is closed while starchat waits at `Apply?`, and the `--diff` patch is applied by
git (and `patch -p1`) in a real repository.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from starchat_cli.core.errors import ExitCode

from .helpers.cli import REPO
from .helpers.servers import LoopbackServer, QuietHandler

OLD = "def f(x):\n    return x + 1\n\n\ndef g(x):\n    return x * 2\n"
NEW = OLD.replace("def g", "def double")


def block(code: str) -> str:
    return f"Here is the new file:\n\n```python\n{code}```\n"


class Model:
    """A loopback OpenAI-compatible server: every chat completion streams ``reply``."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.asked = 0  # chat completions requested
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self.send("application/json", json.dumps({"data": [{"id": "m"}]}).encode())

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.asked += 1
                events = [
                    {"choices": [{"delta": {"content": outer.reply}, "index": 0}]},
                    {"choices": [{"delta": {}, "index": 0, "finish_reason": "stop"}]},
                ]
                body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                self.send("text/event-stream", body.encode())

        self.http = LoopbackServer(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def model() -> Iterator[Model]:
    m = Model(block(NEW))
    yield m
    m.close()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def starchat(
    args: list[str], cwd: Path, *, timeout: float = 60, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    """The real CLI in ``cwd``, stdin from /dev/null (or ``input=``); a run that hangs fails the test."""
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(
        [sys.executable, "-m", "starchat_cli", *args],
        capture_output=True,
        cwd=cwd,
        env=env(),
        timeout=timeout,
        **kw,  # type: ignore[arg-type]
    )


def one_line_error(res: subprocess.CompletedProcess[bytes]) -> str:
    err = res.stderr.decode()
    assert "Traceback" not in err and "a bug" not in err, err
    assert err.count("starchat: error:") == 1, err
    return err


# -- not a regular file: refused before it is opened -------------------------------------------


def _limit_memory() -> None:
    """Reading /dev/zero to the end would take all the memory: cap it, so a regression fails fast."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.py"
    os.mkfifo(path)
    return path


def test_edit_refuses_a_fifo_a_directory_and_devices_before_opening_them(tmp_path, fifo, model):
    (tmp_path / "app.py").write_text(OLD)
    (tmp_path / "folder").mkdir()
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    cases = [
        (["pipe.py"], "pipe.py is a named pipe (FIFO), not a regular file"),
        (["folder"], "folder is a directory"),
        (["/dev/null"], "/dev/null is a character device, not a regular file"),
        (["/dev/zero"], "/dev/zero is a character device, not a regular file"),
        (["loop1"], "cannot read loop1: too many levels of symbolic links"),
        (["app.py", "-f", "pipe.py"], "pipe.py is a named pipe (FIFO), not a regular file"),  # context too
        (["app.py", "-f", "/dev/zero"], "/dev/zero is a character device, not a regular file"),
    ]
    for target, says in cases:
        res = starchat(
            ["edit", *target, "rename g", "--yes", "-e", model.url],
            tmp_path,
            timeout=30,
            preexec_fn=_limit_memory,
        )
        err = one_line_error(res)
        assert res.returncode == ExitCode.INPUT, (target, err)
        assert says.lower() in err.lower(), err
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the pipe: nothing replaced it
    assert (tmp_path / "app.py").read_text() == OLD


def test_complete_refuses_a_fifo_and_devices_before_opening_them(tmp_path, fifo):
    (tmp_path / "app.py").write_text(OLD)
    cases = [
        ["complete", "pipe.py:1"],
        ["complete", "/dev/zero:1"],
        ["complete", "app.py:1", "-f", "pipe.py"],
        ["complete", "--suffix-file", "pipe.py"],
    ]
    for args in cases:
        piped = {"input": b"x = "} if "--suffix-file" in args else {}
        res = starchat([*args, "-m", "nothing"], tmp_path, timeout=30, preexec_fn=_limit_memory, **piped)
        err = one_line_error(res)
        assert res.returncode == ExitCode.INPUT, (args, err)
        assert "not a regular file" in err, err


# -- read-only ---------------------------------------------------------------------------------


def test_a_read_only_file_is_refused_unless_forced(tmp_path, model):
    target = tmp_path / "app.py"
    target.write_text(OLD)
    target.chmod(0o444)
    for confirm in (["--yes"], []):  # the prompt is not even reached: no terminal to say yes on
        res = starchat(["edit", "app.py", "rename g", *confirm, "-e", model.url], tmp_path)
        err = one_line_error(res)
        assert res.returncode == ExitCode.NOT_APPLIED, err
        assert "read-only" in err and "--force" in err, err
    assert model.asked == 0  # refused before the model writes a line
    res = starchat(["edit", "app.py", "rename g", "--diff", "-e", model.url], tmp_path)
    assert res.returncode == 0 and b"+def double(x):" in res.stdout  # a patch writes nothing: fine
    res = starchat(["edit", "app.py", "rename g", "--yes", "--force", "-e", model.url], tmp_path)
    assert res.returncode == 0, res.stderr
    assert target.read_text() == NEW and stat.S_IMODE(target.stat().st_mode) == 0o444


# -- may not read --------------------------------------------------------------------------------

NOBODY = 65534


def _as_nobody() -> list[str]:
    """The command prefix that runs a process unprivileged: nothing when the tests are not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: no unprivileged user to read as")
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import starchat_cli.cli.edit"],
        capture_output=True,
        env=env(),
        cwd="/",
    )
    if probe.returncode != 0:
        pytest.skip(f"an unprivileged user cannot run this Python: {probe.stderr.decode()[-200:]}")
    return prefix


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="starchat-perm-"))
    path.chmod(0o755)
    yield path
    for sub in path.iterdir():
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def test_a_file_you_may_not_read_or_in_a_folder_you_may_not_search_is_exit_6(shared_dir):
    prefix = _as_nobody()
    home = shared_dir / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    (shared_dir / "ok.py").write_text(OLD)
    (shared_dir / "ok.py").chmod(0o666)  # writable: only the -f file is at fault
    secret = shared_dir / "secret.py"
    secret.write_text(OLD)
    secret.chmod(0o000 if not prefix else 0o600)  # root's own file, 0600: not nobody's to read
    locked = shared_dir / "locked"
    locked.mkdir()
    (locked / "a.py").write_text(OLD)
    locked.chmod(0o604 if prefix else 0o600)  # its names can be listed, but not searched
    cases = [
        ["edit", "secret.py", "x", "--yes"],
        ["edit", "locked/a.py", "x", "--yes"],
        ["edit", "ok.py", "x", "--yes", "-f", "locked/a.py"],
        ["complete", "secret.py:1"],
        ["complete", "locked/a.py:1"],
    ]
    for args in cases:
        res = subprocess.run(
            [*prefix, sys.executable, "-m", "starchat_cli", *args, "-e", "http://127.0.0.1:9"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            cwd=shared_dir,
            env={**env(), "STARCHAT_HOME": str(home)},
            timeout=60,
        )
        err = one_line_error(res)
        assert res.returncode == ExitCode.INPUT, (args, err)
        assert "permission denied" in err, err
    assert (shared_dir / "ok.py").read_text() == OLD


def test_the_chat_offers_a_block_named_into_a_folder_it_may_not_search(shared_dir):
    """The reply names locked/a.py: the insert form opens (a new file there), no crash."""
    prefix = _as_nobody()
    locked = shared_dir / "locked"
    locked.mkdir()
    locked.chmod(0o604 if prefix else 0o600)
    code = textwrap.dedent(
        """
        from pathlib import Path
        from starchat_cli.chat.codeblocks import extract_code_blocks
        from starchat_cli.tui.codeflow import CodeFlow

        class App:  # records the screen the flow opens
            def push_screen(self, screen, callback=None):
                print(type(screen).__name__, screen.mode)

        reply = "Save it as `locked/a.py`:\\n\\n```python\\nx = 1\\n```\\n"
        block = extract_code_blocks(reply)[0]
        CodeFlow(App(), root=Path.cwd(), journal=None).start_insert(block, reply)
        """
    )
    res = subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, cwd=shared_dir, env=env(), timeout=60
    )
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().split() == ["InsertScreen", "new"]


# -- a terminal that goes away at the prompt ---------------------------------------------------


def _read_until(fd: int, marker: bytes, deadline: float) -> bytes:
    seen = b""
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"the output ended before {marker!r}: {seen!r}"
            seen += chunk
    return seen


def _wait_reading_stdin(pid: int, deadline: float) -> None:
    """Until the process sleeps in read(0, ...) (Linux: /proc/PID/syscall), so the hang-up hits
    the read itself; elsewhere a short pause has to do."""
    read_calls = {"0", "63"}  # read on x86-64, aarch64
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/syscall").read_text().split()
        except OSError:
            time.sleep(1.0)
            return
        if len(fields) > 1 and fields[0] in read_calls and int(fields[1], 16) == 0:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("all_on_the_terminal", [False, True], ids=["stdin", "stdin-stdout-stderr"])
def test_the_terminal_going_away_at_apply_is_a_no(tmp_path, model, all_on_the_terminal):
    target = tmp_path / "app.py"
    target.write_text(OLD)
    master, slave = os.openpty()
    out = slave if all_on_the_terminal else subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "starchat_cli", "edit", "app.py", "rename g", "-e", model.url],
        stdin=slave,
        stdout=out,
        stderr=out,
        cwd=tmp_path,
        env=env(),
    )
    os.close(slave)
    try:
        deadline = time.monotonic() + 60
        shown = _read_until(master if all_on_the_terminal else proc.stdout.fileno(), b"Apply?", deadline)
        assert b"+def double(x):" in shown
        _wait_reading_stdin(proc.pid, deadline)
    finally:
        os.close(master)  # the terminal is gone: reading it is EIO from now on
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.NOT_APPLIED, err
    if not all_on_the_terminal:
        assert b"left as it was" in err and b"Traceback" not in err and b"a bug" not in err, err
    assert target.read_text() == OLD


# -- --diff | git apply, byte for byte ------------------------------------------------------------

HEADED = "# café\n" + OLD  # the rewrite changes the first line too: the BOM's, the é's
ENCODED = {
    "crlf": HEADED.replace("\n", "\r\n").encode(),
    "latin-1": HEADED.encode("latin-1"),
    "bom": b"\xef\xbb\xbf" + HEADED.encode(),
    "no-final-newline": HEADED.rstrip("\n").encode(),
}


def _git(*args: str, cwd: Path, **kw: object) -> subprocess.CompletedProcess[bytes]:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.autocrlf=false"]
    return subprocess.run([*git, *args], cwd=cwd, capture_output=True, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(ENCODED))
def test_the_diff_applies_with_git_and_patch_byte_for_byte(tmp_path, model, kind):
    original = ENCODED[kind]
    text = original.removeprefix(b"\xef\xbb\xbf").decode("utf-8" if kind != "latin-1" else "latin-1")
    new = text.replace("\r\n", "\n").replace("café", "caffè").replace("def g", "def double")
    model.reply = block(new.rstrip("\n") + "\n")
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    target = repo / "pkg" / "mod.py"
    target.write_bytes(original)
    _git("init", "-q", cwd=repo, check=True)
    _git("add", ".", cwd=repo, check=True)
    _git("commit", "-qm", "init", cwd=repo, check=True)

    res = starchat(["edit", "pkg/mod.py", "rename g", "--diff", "-e", model.url], repo)
    assert res.returncode == 0, res.stderr
    patch = res.stdout
    assert patch.startswith(b"--- a/pkg/mod.py\n+++ b/pkg/mod.py\n"), patch
    assert target.read_bytes() == original  # --diff writes nothing

    # What --yes writes, in a copy: the patch must produce exactly these bytes.
    twin = tmp_path / "twin"
    shutil.copytree(repo, twin)
    assert starchat(["edit", "pkg/mod.py", "rename g", "--yes", "-e", model.url], twin).returncode == 0
    written = (twin / "pkg" / "mod.py").read_bytes()
    assert written != original

    applied = _git("apply", "-", cwd=repo, input=patch)
    assert applied.returncode == 0, applied.stderr.decode()
    assert target.read_bytes() == written

    if shutil.which("patch") is None:
        return  # CI installs it (.ci/run); elsewhere git's check has to do
    target.write_bytes(original)
    patched = subprocess.run(["patch", "-p1", "--quiet"], cwd=repo, input=patch, capture_output=True)
    assert patched.returncode == 0, patched.stdout.decode() + patched.stderr.decode()
    assert target.read_bytes() == written


def test_a_utf16_file_has_no_line_patch_and_says_so(tmp_path, model):
    target = tmp_path / "w.py"
    target.write_bytes(OLD.encode("utf-16"))
    res = starchat(["edit", "w.py", "rename g", "--diff", "-e", model.url], tmp_path)
    err = one_line_error(res)
    assert res.returncode == ExitCode.INPUT and "UTF-16" in err and "--json" in err, err
    assert res.stdout == b""
