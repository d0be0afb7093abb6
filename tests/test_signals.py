"""Ctrl-C at any moment of ``starchat ask`` ends it with exit 130, never 0, never a traceback.

A real ``python -m starchat_cli ask -m demo`` subprocess gets SIGINT at moments picked from
its own progress: ``-X importtime`` writes a line on stderr as each module finishes
importing, so "just after ``starchat_cli.engine.llamacpp.offload`` was imported" is the start of the
model load (``llama.cpp`` then calls its log callback thousands of times: a Ctrl-C there
used to be dropped by ctypes, and the answer printed with exit 0). The mechanism itself
(``cli/signals.py``) is checked with libc's ``qsort`` calling a Python comparison function.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from starchat_cli.core.errors import ExitCode

from .helpers.cli import REPO, start_starchat

LONG_ANSWER = "Write a very long essay about the history of programming languages."


def ask_interrupted(marker: str, delay: float, worker: str = "off") -> tuple[int, str]:
    """Run ``ask -m demo``; SIGINT ``delay`` s after module ``marker`` was imported: (exit, stderr).
    ``worker``: off, the model in the ask process; on, in its worker process (engine/worker/)."""
    proc = start_starchat(
        ["ask", "-m", "demo", "-t", "0", LONG_ANSWER],
        python=("-X", "importtime"),
        stdout=subprocess.DEVNULL,
        env={"STARCHAT_WORKER": worker},
    )
    err = b""
    deadline = time.time() + 120
    try:
        while marker.encode() not in (line.rsplit(b"|", 1)[-1].strip() for line in err.splitlines()):
            assert proc.poll() is None, f"ended before importing {marker}: {err.decode()[-2000:]}"
            assert time.time() < deadline, f"{marker} never imported"
            if select.select([proc.stderr], [], [], 1)[0]:
                err += os.read(proc.stderr.fileno(), 65536)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = (err + rest).decode(errors="replace").splitlines()
    return proc.returncode, "\n".join(line for line in lines if not line.startswith("import time:"))


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("marker", "delay"),
    [
        ("starchat_cli.cli", 0.0),  # importing typer and the command
        ("starchat_cli.cli.app", 0.0),
        ("starchat_cli.services.runtime", 0.0),  # settings, the engine's modules
        ("llama_cpp", 0.0),
        ("starchat_cli.engine.llamacpp.offload", 0.0),  # the model load: llama.cpp's log callback
        ("starchat_cli.engine.llamacpp.offload", 0.01),
        ("starchat_cli.engine.llamacpp.offload", 0.03),
        ("starchat_cli.engine.llamacpp.offload", 0.06),
        ("starchat_cli.engine.llamacpp.offload", 0.1),
        ("starchat_cli.engine.llamacpp.offload", 0.2),  # the prompt, the first tokens
        ("starchat_cli.engine.llamacpp.offload", 0.5),
        ("starchat_cli.engine.llamacpp.offload", 1.0),  # decoding, writing
    ],
)
def test_ctrl_c_at_any_moment_of_ask_exits_130(demo_gguf, marker, delay):
    code, err = ask_interrupted(marker, delay)
    assert code == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip() in ("", "starchat: error: interrupted"), err


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("marker", "delay"),
    [
        ("starchat_cli.services.runtime", 0.0),
        ("starchat_cli.engine.worker.client", 0.0),  # connecting, starting the worker
        ("starchat_cli.engine.worker.client", 0.05),
        ("starchat_cli.engine.worker.client", 0.2),  # the worker loading the model
        ("starchat_cli.engine.worker.client", 0.5),  # the prompt, the first tokens
        ("starchat_cli.engine.worker.client", 1.0),  # the reply streaming from the worker
    ],
)
def test_ctrl_c_at_any_moment_of_ask_through_a_worker_exits_130(demo_gguf, marker, delay, isolated_home):
    code, err = ask_interrupted(marker, delay, worker="on")
    assert code == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip() in ("", "starchat: error: interrupted"), err
    deadline = time.time() + 5  # and no worker is left (keep-alive 0), even one started as Ctrl-C came
    while workers_of(isolated_home) and time.time() < deadline:
        time.sleep(0.05)
    assert not workers_of(isolated_home)


def workers_of(home: Path) -> list[int]:
    """The pids of the worker processes started with STARCHAT_HOME=``home``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args, env = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"starchat_cli.engine.worker" in args and f"STARCHAT_HOME={home}".encode() in env.split(b"\0"):
            pids.append(int(proc.name))
    return pids


def run_qsort(setup: str) -> subprocess.CompletedProcess[str]:
    """libc's qsort with a Python comparison (a ctypes callback) that signals its own process
    on its first call: the exception is raised inside the callback, where ctypes drops it."""
    code = textwrap.dedent(
        """
        import ctypes, os, signal, sys, time
        from starchat_cli.cli import signals
        SETUP
        CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
        calls = 0
        def compare(a, b):
            global calls
            calls += 1
            if calls == 1:
                os.kill(os.getpid(), SIGNUM)
            return a[0] - b[0]
        numbers = (ctypes.c_int * 2000)(*range(2000, 0, -1))
        try:
            ctypes.CDLL(None).qsort(numbers, 2000, ctypes.sizeof(ctypes.c_int), CMP(compare))
            for _ in range(200):  # the interrupt, if it comes, comes here
                time.sleep(0.01)
            print("lost")
        except KeyboardInterrupt as exc:
            print(type(exc).__name__, "after", "all" if list(numbers) == sorted(numbers) else "part")
        """
    ).replace("SETUP", setup)
    signum = "signal.SIGTERM" if "terminate" in setup else "signal.SIGINT"
    return subprocess.run(
        [sys.executable, "-c", code.replace("SIGNUM", signum)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_ctypes_drops_an_interrupt_raised_in_a_callback():
    """What keep_interrupts is for: without it the interrupt is lost (the probe can fail)."""
    res = run_qsort("")
    assert res.stdout.strip() == "lost"
    assert "Exception ignored on calling ctypes callback function" in res.stderr


def test_an_interrupt_dropped_in_a_ctypes_callback_is_raised_after_it():
    res = run_qsort("signals.keep_interrupts()")
    # Raised once qsort returned (an exception cannot leave the C call); "part" when the re-raise
    # first landed in another compare call, which then returned nothing and left the sort unfinished.
    assert res.stdout.strip() in ("KeyboardInterrupt after all", "KeyboardInterrupt after part"), res.stderr
    assert res.stderr == ""


def test_sigterm_dropped_in_a_ctypes_callback_is_raised_after_it():
    """convert, quantize and pull turn SIGTERM into Terminated; llama.cpp's quantizer logs through
    the same callback, so a `kill PID` there must not be lost either."""
    res = run_qsort("signals.keep_interrupts(); signals.terminate_like_ctrl_c()")
    assert res.stdout.strip() in ("Terminated after all", "Terminated after part"), res.stderr
    assert res.stderr == ""


def test_other_dropped_exceptions_are_still_reported():
    code = textwrap.dedent(
        """
        import ctypes
        from starchat_cli.cli import signals
        signals.keep_interrupts()
        CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
        def compare(a, b):
            raise ValueError("boom")
        numbers = (ctypes.c_int * 3)(3, 2, 1)
        ctypes.CDLL(None).qsort(numbers, 3, ctypes.sizeof(ctypes.c_int), CB(compare))
        print("done")
        """
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert other.stdout.strip() == "done"
    assert "Exception ignored on calling ctypes callback function" in other.stderr
    assert "ValueError: boom" in other.stderr
