"""Downloads under stress: a disk that fills mid-download, and a redirect to another host.

The fake Hub (tests/helpers/fake_hub.py, the `hub` fixture) is a real HTTP server on loopback; the CDN of the redirect
test is a second one on another address (127.0.0.2) and port, recording the headers it got.
"""

from __future__ import annotations

import errno
import io
import pathlib

import pytest
from typer.testing import CliRunner

from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode

from .helpers.cli import run_starchat, start_starchat
from .helpers.fake_hub import GGUF_REPO, Q4, FakeHub, partial_download
from .helpers.models import write_tiny_gguf

KEY = f"{GGUF_REPO}/{Q4}"
runner = CliRunner()


class FillsUp(io.RawIOBase):
    """A file whose disk is full after ``room`` bytes: the bytes before stay written."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        take = min(len(data), self.room)
        self.real.write(bytes(data[:take]))
        self.real.flush()
        self.room -= take
        if take < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return take

    def fileno(self) -> int:
        return self.real.fileno()

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()
            self.real.close()


def test_disk_full_mid_download_keeps_the_partial_and_resumes(
    hub, hub_env, demo_bytes, tmp_path, monkeypatch
):
    size = len(demo_bytes)
    room = size // 3
    real_open = pathlib.Path.open

    def fake_open(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        if self.name.endswith(".incomplete") and "b" in mode and ("a" in mode or "w" in mode):
            return FillsUp(handle, room)
        return handle

    monkeypatch.setattr(pathlib.Path, "open", fake_open)
    res = runner.invoke(app, ["pull", "starchat2"])
    assert res.exit_code == ExitCode.ERROR, res.output
    # (the fake Hub's thread may add its own note about the dropped connection: not starchat's)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("starchat: error")]
    assert len(errors) == 1, res.stderr
    line = errors[0]
    assert "disk full" in line and "resume" in line
    assert "Traceback" not in res.output and "unexpected" not in line
    partial = list((tmp_path / "hf" / "hub").rglob("*.incomplete"))
    assert len(partial) == 1 and partial[0].stat().st_size == room  # what was written is kept
    assert str(partial[0]) in line  # the message says where the partial lives

    monkeypatch.setattr(pathlib.Path, "open", real_open)
    served = hub.served[KEY]
    again = run_starchat(["pull", "starchat2"], env=hub_env)
    assert again.returncode == 0, again.stderr.decode()
    assert hub.served[KEY] - served == size - room  # resumed, not restarted
    assert not list((tmp_path / "hf" / "hub").rglob("*.incomplete"))


def test_an_unwritable_cache_is_an_output_error(hub, hub_env, tmp_path):
    blocker = tmp_path / "hf-is-a-file"
    blocker.write_text("x")
    res = run_starchat(["pull", "starchat2"], env={**hub_env, "HF_HOME": str(blocker)})
    err = res.stderr.decode()
    assert res.returncode == ExitCode.OUTPUT, err
    assert err.count("\n") == 1 and "not a folder" in err and str(blocker) in err


@pytest.fixture
def cdn(demo_bytes):
    fake = FakeHub()
    fake.add(GGUF_REPO, {Q4: demo_bytes})
    try:
        fake.start(host="127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not a usable loopback address here")
    yield fake
    fake.close()


def test_redirect_to_another_host_drops_the_authorization(hub, cdn, hub_env, tmp_path, demo_bytes):
    hub.repos[GGUF_REPO].gated = True  # the Hub wants the token; the CDN must never see it
    hub.redirect_to = cdn.url
    token = hub.repos[GGUF_REPO].token
    res = run_starchat(["pull", "starchat2"], env={**hub_env, "HF_TOKEN": token})
    assert res.returncode == 0, res.stderr.decode()
    origin_resolves = [h for h, r in zip(hub.headers_seen, hub.requests) if "/resolve/" in r]
    cdn_resolves = [h for h, r in zip(cdn.headers_seen, cdn.requests) if "/resolve/" in r]
    assert origin_resolves and all(h.get("authorization") == f"Bearer {token}" for h in origin_resolves)
    assert cdn_resolves, "the download never reached the CDN"
    assert all("authorization" not in h for h in cdn_resolves), cdn_resolves
    assert cdn.served[KEY] == len(demo_bytes)


def test_tiny_gguf_helper_still_works(tmp_path):
    assert write_tiny_gguf(tmp_path / "t.gguf").stat().st_size > 0


def test_sigterm_mid_download_keeps_the_partial_and_resumes(hub, hub_env, demo_bytes, tmp_path):
    """`kill PID` during a pull: as Ctrl-C, the resumable partial stays (never under the final name)."""
    import signal

    hub.throttle = 0.05  # ~5 MB/s: still downloading when the signal comes
    proc = start_starchat(["pull", "starchat2"], env=hub_env)
    partial = partial_download(tmp_path / "hf", 1_000_000)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.TERMINATED, err
    assert b"terminated: run the same command again to resume" in err and b"Traceback" not in err
    kept = partial.stat().st_size
    assert 0 < kept < len(demo_bytes)
    blobs = partial.parent
    assert [p.name for p in blobs.iterdir()] == [partial.name]  # no half file under the final name
    hub.throttle = 0.0
    served = hub.served[KEY]
    res = run_starchat(["pull", "starchat2"], env=hub_env)
    assert res.returncode == 0, res.stderr.decode()
    assert hub.served[KEY] - served == len(demo_bytes) - kept
