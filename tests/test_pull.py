"""`starchat pull` against a real HTTP server on 127.0.0.1 that speaks the Hub's API.

The CLI runs as a subprocess with HF_ENDPOINT pointing at the fake Hub and HF_HOME at a
temporary cache, so huggingface_hub reads its settings fresh, as for a user.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from starchat_cli.core.errors import ExitCode

from .helpers.cli import run_starchat, start_starchat
from .helpers.fake_hub import GGUF_REPO, Q4, Q8, partial_download
from .helpers.models import SHARDED, STARCODER2_SHARDED

pytestmark = pytest.mark.e2e

KEY = f"{GGUF_REPO}/{Q4}"


@pytest.fixture
def tiny_bytes(hub) -> bytes:
    return hub.repos[GGUF_REPO].files[Q8]  # the tiny GGUF the hub serves as the Q8_0 file


def pull(env, *args: str):
    return run_starchat(["pull", *args], env=env)


def listed(env) -> dict[str, dict]:
    res = run_starchat(["list", "--json"], env=env)
    return {row["name"]: row for row in json.loads(res.stdout or "[]")}


def test_prebuilt_pull_then_ask(hub, hub_env, demo_bytes, tmp_path):
    res = pull(hub_env, "starchat2")
    assert res.returncode == 0, res.stderr
    assert b"pulled starchat2 (Q4_1, prebuilt)" in res.stdout  # the demo bytes stand in: Q4_1 inside
    assert hub.served[KEY] == len(demo_bytes)
    assert f"starchat: {Q4}: {len(demo_bytes):,} bytes in".encode() in res.stderr  # piped: a line per file
    snapshot = tmp_path / "hf" / "hub" / "models--bartowski--starchat2-15b-v0.1-GGUF" / "snapshots"
    files = list(snapshot.rglob(Q4))
    assert len(files) == 1 and files[0].is_symlink()
    row = listed(hub_env)["starchat2"]
    assert row["source"] == "prebuilt" and row["family"] == "starchat2" and row["size"] == len(demo_bytes)
    ask = run_starchat(["ask", "-m", "starchat2", "-t", "0", "-n", "5", "--json", "hi"], env=hub_env)
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["format"] == "chatml"
    again = pull(hub_env, "starchat2")  # already there: nothing is fetched again
    assert again.returncode == 0 and hub.served[KEY] == len(demo_bytes)
    # Non-LFS files are not needed for a prebuilt pull.
    assert not any("README.md" in r for r in hub.requests if "/resolve/" in r)


def test_quant_choice_and_repo_syntax(hub, hub_env, tiny_bytes):
    res = pull(hub_env, "starchat2", "--quant", "q8_0")
    assert res.returncode == 0, res.stderr
    assert "starchat2:Q8_0" in listed(hub_env)
    res = pull(hub_env, f"hf.co/{GGUF_REPO}:{Q8}")
    assert res.returncode == 0, res.stderr
    missing = pull(hub_env, "starchat2", "--quant", "Q5_K_M")
    assert missing.returncode == ExitCode.REMOTE
    assert b"no Q5_K_M file; quants there: Q4_K_M, Q8_0" in missing.stderr


def test_ambiguous_quant_lists_the_choices(hub, hub_env, tiny_bytes):
    hub.add("someone/coder-GGUF", {"coder-Q4_K_M.gguf": tiny_bytes, "coder-Q4_K_S.gguf": tiny_bytes})
    res = pull(hub_env, "someone/coder-GGUF:Q4_K")
    assert res.returncode == ExitCode.REMOTE
    assert b"matches several files" in res.stderr and b"coder-Q4_K_S.gguf" in res.stderr
    res = pull(hub_env, "someone/coder-GGUF")
    assert res.returncode == ExitCode.REMOTE and b"add :QUANT (Q4_K_M, Q4_K_S)" in res.stderr
    ok = pull(hub_env, "someone/coder-GGUF:Q4_K_S")
    assert ok.returncode == 0, ok.stderr
    assert "coder-GGUF:Q4_K_S" in listed(hub_env)


def test_resume_after_the_connection_drops(hub, hub_env, demo_bytes, tmp_path):
    size = len(demo_bytes)
    hub.cut_after[KEY] = size // 2
    first = pull(hub_env, "starchat2")
    assert first.returncode == ExitCode.REMOTE
    assert b"run the same command again to resume" in first.stderr
    partial = list((tmp_path / "hf" / "hub").rglob("*.incomplete"))
    assert len(partial) == 1
    kept = partial[0].stat().st_size
    assert size // 4 < kept <= size // 2  # what arrived before the drop is kept
    assert "starchat2" not in listed(hub_env)  # nothing unverified is registered
    served_before = hub.served[KEY]
    second = pull(hub_env, "starchat2")
    assert second.returncode == 0, second.stderr
    resumed = hub.served[KEY] - served_before
    assert resumed == size - kept < size  # only the rest was fetched
    assert not list((tmp_path / "hf" / "hub").rglob("*.incomplete"))


def test_checksum_mismatch_is_fetched_again(hub, hub_env, demo_bytes):
    hub.corrupt[KEY] = 1
    res = pull(hub_env, "starchat2")
    assert res.returncode == 0, res.stderr
    assert hub.served[KEY] == 2 * len(demo_bytes)


def test_checksum_mismatch_twice_registers_nothing(hub, hub_env, tmp_path):
    hub.corrupt[KEY] = 2
    res = pull(hub_env, "starchat2")
    assert res.returncode == ExitCode.REMOTE
    assert b"failed its checksum twice" in res.stderr
    assert "starchat2" not in listed(hub_env)
    blobs = list((tmp_path / "hf" / "hub").rglob("blobs/*"))
    assert blobs == []


def test_unknown_repo(hub, hub_env):
    res = pull(hub_env, "nobody/nothing-GGUF")
    assert res.returncode == ExitCode.REMOTE
    assert b"no model repo 'nobody/nothing-GGUF'" in res.stderr and b"HF_TOKEN" in res.stderr


def test_gated_repo_needs_a_token(hub, hub_env, tiny_bytes):
    hub.add("org/gated-GGUF", {"gated-Q8_0.gguf": tiny_bytes}, gated=True)
    res = pull(hub_env, "org/gated-GGUF")
    assert res.returncode == ExitCode.REMOTE
    assert b"is gated" in res.stderr and b"HF_TOKEN" in res.stderr
    ok = pull({**hub_env, "HF_TOKEN": "hf_test_token"}, "org/gated-GGUF")
    assert ok.returncode == 0, ok.stderr


def test_not_enough_disk_space(hub, hub_env):
    hub.claimed_sizes[KEY] = 10**15  # a petabyte
    res = pull(hub_env, "starchat2")
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "not enough disk space" in err and "1000000.00 GB to download" in err and "free" in err
    assert hub.served[KEY] == 0


def test_dry_run_downloads_nothing(hub, hub_env, demo_bytes):
    res = pull(hub_env, "starchat2", "--dry-run")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert Q4 in out and "0.10 GB" in out and "to download 0.10 GB" in out
    assert hub.served[KEY] == 0 and listed(hub_env) == {"demo": listed(hub_env)["demo"]}


def test_offline_with_and_without_a_cached_copy(hub, hub_env):
    assert pull(hub_env, "starchat2").returncode == 0
    offline = {**hub_env, "HF_HUB_OFFLINE": "1"}
    res = pull(offline, "starchat2")
    assert res.returncode == 0, res.stderr
    assert b"from the cache (offline)" in res.stdout
    other = pull(offline, "starchat-beta")
    assert other.returncode == ExitCode.REMOTE and b"offline" in other.stderr
    with socket.socket() as s:  # no network: an endpoint nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = {**hub_env, "HF_ENDPOINT": dead}
    res = pull(down, "starchat2")
    assert res.returncode == 0 and b"using the copy in the cache" in res.stderr
    res = pull(down, "starchat-beta")
    assert res.returncode == ExitCode.REMOTE and b"cannot reach" in res.stderr


def test_rm_frees_the_disk(hub, hub_env, demo_bytes, tmp_path):
    assert pull(hub_env, "starchat2").returncode == 0
    res = run_starchat(["rm", "starchat2", "--yes"], env=hub_env)
    assert res.returncode == 0, res.stderr
    assert b"98.4 MB freed" in res.stdout
    assert not [p for p in (tmp_path / "hf" / "hub").rglob("blobs/*") if p.stat().st_size == len(demo_bytes)]
    assert "starchat2" not in listed(hub_env)


def test_bad_targets():
    res = run_starchat(["pull", "not a repo"], env={"HF_HUB_OFFLINE": "0"})
    assert res.returncode == 1 and b"neither a catalog name" in res.stderr
    res = run_starchat(["pull", "demo"], env={"HF_HUB_OFFLINE": "0"})
    assert res.returncode == 1 and b"starchat[demo]" in res.stderr


def test_cache_layout_is_huggingface_hubs(hub, hub_env, tmp_path, demo_bytes):
    """huggingface_hub itself finds what starchat downloaded."""
    assert pull(hub_env, "starchat2").returncode == 0
    code = f"from huggingface_hub import try_to_load_from_cache as t; print(t({GGUF_REPO!r}, {Q4!r}))"
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **hub_env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out).read_bytes() == demo_bytes


@pytest.fixture(scope="module")
def sharded_files(tiny_models) -> dict[str, bytes]:
    """A tiny random Starcoder2 checkpoint with StarChat2's chat tokens, as Hub files."""
    folder = tiny_models.checkpoint(STARCODER2_SHARDED, **SHARDED).dir
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert any(n.endswith(".safetensors") for n in files) and "model.safetensors.index.json" in files
    return files


def test_pull_from_source_converts_quantizes_and_registers(hub, hub_env, sharded_files, isolated_home):
    files = dict(sharded_files)
    files["pytorch_model.bin"] = b"old weights that must not be downloaded" * 100
    files["README.md"] = b"# card\n"
    hub.add("HuggingFaceH4/starchat2-15b-v0.1", files)
    res = pull(hub_env, "starchat2", "--from-source", "--quant", "Q8_0")
    assert res.returncode == 0, res.stderr
    assert b"pulled starchat2:Q8_0 (Q8_0, converted)" in res.stdout
    fetched = {r.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r}
    assert "pytorch_model.bin" not in fetched and "README.md" not in fetched
    assert "config.json" in fetched and "tokenizer.json" in fetched
    row = listed(hub_env)["starchat2:Q8_0"]
    assert row["source"] == "converted" and row["quant"] == "Q8_0"
    models = isolated_home / "models"
    assert sorted(p.name for p in models.glob("*.gguf")) == ["starchat2-Q8_0.gguf"]  # the F16 is gone
    ask = run_starchat(["ask", "-m", "starchat2:Q8_0", "-t", "0", "-n", "4", "--json", "hi"], env=hub_env)
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["format"] == "chatml"
    keep = pull(hub_env, "starchat2", "--from-source", "--quant", "Q4_0", "--keep-f16")
    assert keep.returncode == 0, keep.stderr
    assert (models / "starchat2-F16.gguf").exists() and (models / "starchat2-Q4_0.gguf").exists()


def test_pull_from_source_of_a_repo_without_weights(hub, hub_env):
    hub.add("org/empty-model", {"config.json": b"{}", "README.md": b"x"})
    res = pull(hub_env, "org/empty-model", "--from-source")
    assert res.returncode == ExitCode.REMOTE and b"no safetensors or pytorch_model" in res.stderr


def test_ctrl_c_then_the_same_command_resumes(hub, hub_env, demo_bytes, tmp_path):
    import signal

    hub.throttle = 0.05  # ~5 MB/s: the download is still running when Ctrl-C comes
    proc = start_starchat(["pull", "starchat2"], env=hub_env)
    partial = partial_download(tmp_path / "hf", 2_000_000)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert b"run the same command again to resume" in err and b"Traceback" not in err
    kept = partial.stat().st_size
    assert 0 < kept < len(demo_bytes)
    hub.throttle = 0.0
    served_before = hub.served[KEY]
    res = pull(hub_env, "starchat2")
    assert res.returncode == 0, res.stderr
    assert hub.served[KEY] - served_before == len(demo_bytes) - kept
