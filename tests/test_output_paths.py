"""Output paths that cannot be written: one line naming the path and the reason, exit 12.

Each command that writes a file the user names is tried on a path under a regular file
(ENOTDIR), onto an existing folder (EISDIR), in a pseudo filesystem (/proc, /sys) and in a
read-only folder (chmod; skipped as root, where chmod does not stop writes).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starchat_cli.chat.sessions import SessionStore
from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode, OutputError, StarchatError
from starchat_cli.core.fsutil import atomic_write_text, ensure_folder, output_error

from .helpers.cli import run_starchat

runner = CliRunner()


def _chmod_denies(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return True
    probe.unlink()
    return False


@pytest.fixture
def readonly_dir(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if not _chmod_denies(folder):
        folder.chmod(0o755)
        pytest.skip("running as root: chmod does not deny writes here (the /sys case covers EACCES)")
    yield folder
    folder.chmod(0o755)


def bad_targets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, words the message must contain)."""
    regular = tmp_path / "a-file.txt"
    regular.write_text("I am a file\n")
    folder = tmp_path / "a-folder"
    folder.mkdir(exist_ok=True)
    return {
        "under-a-file": (regular / "out.md", "not a folder"),
        "onto-a-folder": (folder, "is a folder"),
        "pseudo-proc": (Path("/proc/starchat-test/out.md"), "pseudo filesystem"),
        "pseudo-sys": (Path("/sys/fs/starchat-test.md"), "permission denied"),
    }


NAMES = ["under-a-file", "onto-a-folder", "pseudo-proc", "pseudo-sys"]


@pytest.mark.parametrize(
    ("code", "words", "exit_code"),
    [
        (errno.ENOTDIR, "not a folder", ExitCode.OUTPUT),
        (errno.EISDIR, "is a folder", ExitCode.OUTPUT),
        (errno.EACCES, "permission denied", ExitCode.OUTPUT),
        (errno.EROFS, "read-only filesystem", ExitCode.OUTPUT),
        (errno.EPERM, "not permitted", ExitCode.OUTPUT),
        (errno.ENOSPC, "disk full", ExitCode.ERROR),
        (errno.EDQUOT, "disk full", ExitCode.ERROR),
        (errno.EIO, "input/output error", ExitCode.OUTPUT),
    ],
)
def test_one_errno_table(code, words, exit_code):
    err = output_error("/some/where.md", OSError(code, os.strerror(code)))
    assert isinstance(err, StarchatError) and err.exit_code == exit_code
    assert "/some/where.md" in err.message and words in err.message
    if code not in (errno.ENOSPC, errno.EDQUOT):
        assert isinstance(err, OutputError) and "disk" not in err.message and "space" not in err.message


@pytest.mark.parametrize("name", NAMES)
def test_atomic_write_names_path_and_reason(name, tmp_path):
    """The shared writer under sessions export, the TUI's /export and /save, and every config file."""
    target, words = bad_targets(tmp_path)[name]
    with pytest.raises(OutputError) as info:
        atomic_write_text(target, "hello\n")
    assert str(target) in info.value.message and words in info.value.message
    assert info.value.exit_code == ExitCode.OUTPUT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file.txt", "a-folder"]  # no temp file left
    assert list((tmp_path / "a-folder").iterdir()) == []


def test_atomic_write_in_readonly_folder(readonly_dir):
    with pytest.raises(OutputError, match="permission denied") as info:
        atomic_write_text(readonly_dir / "x.md", "hello\n")
    assert "disk" not in info.value.message


def test_ensure_folder(tmp_path):
    regular = tmp_path / "f"
    regular.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        ensure_folder(regular)
    with pytest.raises(OutputError, match="not a folder"):
        ensure_folder(regular / "sub")
    assert ensure_folder(tmp_path / "new" / "sub").is_dir()


@pytest.mark.parametrize("name", NAMES)
def test_sessions_export(name, tmp_path, saved_sessions):
    target, words = bad_targets(tmp_path)[name]
    res = runner.invoke(app, ["sessions", "export", saved_sessions[0], "-o", str(target)])
    assert res.exit_code == ExitCode.OUTPUT, res.output
    line = res.stderr.strip()
    assert "\n" not in line and str(target) in line and words in line
    assert "unexpected" not in line and "bug" not in line


def test_tui_export_goes_through_the_same_writer(tmp_path, saved_sessions):
    """/export calls Conversation.export -> SessionStore.export_markdown: the same error."""
    target, words = bad_targets(tmp_path)["under-a-file"]
    with SessionStore() as store, pytest.raises(OutputError, match=words):
        store.export_markdown(saved_sessions[0], target)


@pytest.mark.parametrize("name", ["pseudo-proc", "pseudo-sys"])
def test_code_block_save_goes_through_the_same_writer(name, tmp_path):
    """/save and Ctrl+S plan the write, then apply it: a path that cannot be written is the same one line."""
    from starchat_cli.edits.apply import apply_edit
    from starchat_cli.edits.plan import plan_edit

    target, words = bad_targets(tmp_path)[name]
    plan = plan_edit(target, "print('hi')\n", "new", root=tmp_path, allow_outside=True)
    with pytest.raises(OutputError) as info:
        apply_edit(plan)
    assert str(target) in info.value.message and words in info.value.message


def test_cache_clear_on_readonly_folder(readonly_dir, monkeypatch):
    from starchat_cli.engine.llamacpp.prompt_cache import META_SUFFIX, STATE_SUFFIX, PromptCache

    cache = PromptCache(readonly_dir, cap_bytes=10**9)
    readonly_dir.chmod(0o755)
    (readonly_dir / f"abc{META_SUFFIX}").write_text('{"model": "demo", "n_tokens": 3}')
    (readonly_dir / f"abc{STATE_SUFFIX}").write_bytes(b"x")
    readonly_dir.chmod(0o555)
    with pytest.raises(OutputError):
        cache.clear()


@pytest.mark.parametrize("name", NAMES)
def test_convert_output(name, tmp_path, tiny_checkpoint):
    target, words = bad_targets(tmp_path)[name]
    res = run_starchat(["convert", str(tiny_checkpoint), "-o", str(target)])
    err = res.stderr.decode()
    assert res.returncode == ExitCode.OUTPUT, err
    assert err.count("\n") == 1 and str(target) in err and words in err
    assert "disk space" not in err


@pytest.mark.parametrize("name", NAMES)
def test_quantize_output(name, tmp_path, demo_gguf):
    target, words = bad_targets(tmp_path)[name]
    res = run_starchat(["quantize", str(demo_gguf), "-t", "Q4_0", "--allow-requantize", "-o", str(target)])
    err = res.stderr.decode()
    assert res.returncode == ExitCode.OUTPUT, err
    assert err.count("\n") == 1 and str(target) in err and words in err
    assert "disk space" not in err


def test_model_add_copy_into_unwritable_models_dir(demo_gguf):
    """`add --copy` (like convert/quantize/pull --from-source) writes into the models folder."""
    from starchat_cli.core.paths import get_paths

    models = get_paths().models_dir
    models.parent.mkdir(parents=True, exist_ok=True)
    models.write_text("a file where the models folder goes")
    res = run_starchat(["add", str(demo_gguf), "--name", "copy-test", "--copy"])
    err = res.stderr.decode()
    assert res.returncode == ExitCode.OUTPUT, err
    assert "not a folder" in err and err.count("\n") == 1
