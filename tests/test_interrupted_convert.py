"""SIGTERM and SIGKILL in the middle of `starchat convert` / `quantize`: nothing half-written is seen.

A real subprocess converts a tiny model, slowed down (tests/helpers/slow_convert.py waits after
each chunk written) so the signal lands mid-write. With O_TMPFILE the data lives in an unnamed
file (the test sees it in /proc/PID/fd); without it (``--no-tmpfile`` plays such a platform) in
a hidden ``.starchat-tmp-PID-*.part`` that the next run in that folder sweeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from starchat_cli.core.errors import ExitCode

from .helpers.cli import run_starchat, start_starchat

pytest.importorskip("transformers")


def slow_convert(checkpoint: Path, out: Path, *, tmpfile: bool = True) -> subprocess.Popen:
    """`starchat convert CHECKPOINT -o OUT`, slowed down (tests/helpers/slow_convert.py); without
    ``tmpfile`` as on a platform that has no O_TMPFILE."""
    args = ["convert", str(checkpoint), "-o", str(out)]
    return start_starchat(args if tmpfile else ["--no-tmpfile", *args], module="tests.helpers.slow_convert")


def writing_into(proc: subprocess.Popen, folder: Path, deadline: float = 120) -> str:
    """Wait until the process holds an open file in ``folder`` (named or unnamed): its link text."""
    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.stderr.read().decode()}")
        try:
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith(str(folder) + "/"):
                    return link
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError("the conversion never opened its output")


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("tmpfile", [True, False], ids=["unnamed", "named-fallback"])
def test_sigterm_cleans_up_like_ctrl_c(tiny_checkpoint, tmp_path, tmpfile):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = slow_convert(tiny_checkpoint, out_dir / "m.gguf", tmpfile=tmpfile)
    link = writing_into(proc, out_dir)
    assert ("(deleted)" in link) == tmpfile, link  # O_TMPFILE: an unnamed file
    if not tmpfile:
        assert ".starchat-tmp-" in link
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.TERMINATED, err.decode()
    assert err.decode().strip().splitlines()[-1] == "starchat: error: terminated"
    assert b"Traceback" not in err
    assert visible(out_dir) == []


def test_sigkill_leaves_nothing_visible_with_o_tmpfile(tiny_checkpoint, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = slow_convert(tiny_checkpoint, out_dir / "m.gguf")
    link = writing_into(proc, out_dir)
    if "(deleted)" not in link:
        pytest.skip(f"no O_TMPFILE on this filesystem ({link})")
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert visible(out_dir) == []


def test_sigkill_leftover_is_swept_by_the_next_run(tiny_checkpoint, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = slow_convert(tiny_checkpoint, out_dir / "m.gguf", tmpfile=False)
    writing_into(proc, out_dir)
    proc.kill()
    proc.communicate(timeout=60)
    left = visible(out_dir)
    assert len(left) == 1 and left[0].startswith(f".starchat-tmp-{proc.pid}-"), left  # hidden, self-cleaning
    alive_owner = out_dir / f".starchat-tmp-{os.getpid()}-alive.part"  # a run still going: kept
    alive_owner.write_bytes(b"x")
    res = run_starchat(["convert", str(tiny_checkpoint), "-o", str(out_dir / "other.gguf")])
    assert res.returncode == 0, res.stderr.decode()
    assert visible(out_dir) == sorted([alive_owner.name, "other.gguf"])


def test_quantize_sigterm_leaves_no_partial(tiny_checkpoint, tmp_path):
    src = tmp_path / "src.gguf"
    res = run_starchat(["convert", str(tiny_checkpoint), "-o", str(src), "--outtype", "f32"])
    assert res.returncode == 0, res.stderr.decode()
    out_dir = tmp_path / "q"
    out_dir.mkdir()
    proc = start_starchat(["quantize", str(src), "-t", "Q8_0", "-o", str(out_dir / "q.gguf")])
    try:
        writing_into(proc, out_dir, deadline=60)
    except AssertionError:
        if proc.poll() is not None and proc.returncode == 0:
            pytest.skip("the quantizer finished before the signal could land")
        raise
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (ExitCode.TERMINATED, 0), err.decode()
    assert b"Traceback" not in err
    assert visible(out_dir) == ([] if proc.returncode else ["q.gguf"])


def test_quantize_writes_through_an_unnamed_file(tiny_checkpoint, tmp_path):
    """llama.cpp's quantizer opens /proc/self/fd/N: the result is linked in, readable, complete."""
    src = tmp_path / "src.gguf"
    assert run_starchat(["convert", str(tiny_checkpoint), "-o", str(src)]).returncode == 0
    res = run_starchat(["quantize", str(src), "-t", "Q8_0", "-o", str(tmp_path / "q" / "q.gguf")])
    assert res.returncode == 0, res.stderr.decode()
    out = tmp_path / "q" / "q.gguf"
    assert visible(out.parent) == ["q.gguf"]
    assert out.read_bytes()[:4] == b"GGUF" and oct(out.stat().st_mode & 0o777) != "0o600"
