"""`starchat complete`: the real CLI (a subprocess) on a tiny StarCoder2 GGUF with FIM tokens."""

from __future__ import annotations

import json

import pytest

from starchat_cli.cli.complete import split_at
from starchat_cli.core.errors import ExitCode, InputError

from .helpers.cli import run_starchat

SOURCE = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"


def test_split_at_line_and_column():
    assert split_at(SOURCE, 2, 5, "f") == ("def add(a, b):\n    ", "return a + b\n\nprint(add(1, 2))\n")
    assert split_at(SOURCE, 2, None, "f") == ("def add(a, b):\n    return a + b", "\n\nprint(add(1, 2))\n")
    assert split_at(SOURCE, 1, 1, "f") == ("", SOURCE)
    assert split_at(SOURCE, 5, None, "f") == (SOURCE, "")  # the empty line after the last newline
    assert split_at("é😀x\n", 1, 3, "f") == ("é😀", "x\n")  # columns count characters
    for line, col in ((6, None), (0, None), (2, 18), (2, 0)):
        with pytest.raises(InputError):
            split_at(SOURCE, line, col, "f")


@pytest.fixture(scope="module")
def model(tiny_models) -> str:
    return str(tiny_models.fim_gguf("starcoder2"))


def run(args: list[str], **kw):
    return run_starchat(["complete", *args, "--threads", "2", "-c", "1024"], **kw)


def test_file_line_col_prints_only_the_middle_and_json_has_the_split(tmp_path, model):
    src = tmp_path / "app.py"
    src.write_text(SOURCE)
    plain = run([f"{src}:2:5", "-m", model, "-n", "6", "-t", "0"])
    assert plain.returncode == 0, plain.stderr
    res = run([f"{src}:2:5", "-m", model, "-n", "6", "-t", "0", "--json"])
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["text"] == plain.stdout.decode()  # nothing but the middle is printed
    assert data["prompt"] == (
        f"<file_sep><fim_prefix>{src}\ndef add(a, b):\n    <fim_suffix>return a + b\n\nprint(add(1, 2))\n<fim_middle>"
    )
    assert (data["line"], data["column"]) == (2, 5)
    assert 0 < data["stats"]["generated_tokens"] <= 6 and data["stats"]["prompt_tokens"] > 10


def test_context_files_and_default_column(tmp_path, model):
    src, util = tmp_path / "app.py", tmp_path / "util.py"
    src.write_text(SOURCE)
    util.write_text("def helper():\n    return 1\n")
    res = run([f"{src}:1", "-f", str(util), "-m", model, "-n", "2", "-t", "0", "--json"])
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["prompt"].startswith(
        f"<file_sep>{util}\ndef helper():\n    return 1\n<file_sep><fim_prefix>{src}\n"
    )
    assert data["prompt"].endswith(
        "<fim_prefix>"
        + f"{src}\ndef add(a, b):<fim_suffix>\n    return a + b\n\nprint(add(1, 2))\n<fim_middle>"
    )
    assert data["column"] == len("def add(a, b):") + 1


def test_prefix_on_stdin_with_a_suffix_file(tmp_path, model):
    rest = tmp_path / "rest.py"
    rest.write_text("\n    return a\n")
    res = run(
        ["--suffix-file", str(rest), "-m", model, "-n", "3", "-t", "0", "--json"], input=b"def f(a):\n    "
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["prompt"] == "<fim_prefix>def f(a):\n    <fim_suffix>\n    return a\n<fim_middle>"
    assert data["path"] is None and data["line"] is None
    bare = run(["-m", model, "-n", "3", "-t", "0", "--json"], input=b"x = ")
    assert json.loads(bare.stdout)["prompt"] == "<fim_prefix>x = <fim_suffix><fim_middle>"


def test_the_demo_model_is_refused_with_exit_6(tmp_path, demo_gguf):
    src = tmp_path / "app.py"
    src.write_text(SOURCE)
    res = run([f"{src}:2", "-m", "demo"])
    assert res.returncode == ExitCode.INPUT == 6
    err = res.stderr.decode()
    assert "fill-in-the-middle" in err and "starcoder2-3b" in err and "Traceback" not in err
    assert res.stdout == b""


def test_bad_targets_are_one_line_errors(tmp_path, model):
    src = tmp_path / "app.py"
    src.write_text(SOURCE)
    cases = [
        ([f"{src}:40", "-m", model], ExitCode.INPUT, "5 lines"),
        ([f"{src}:2:99", "-m", model], ExitCode.INPUT, "column 99"),
        ([f"{tmp_path / 'missing.py'}:1", "-m", model], ExitCode.INPUT, "cannot read"),
        ([str(src), "-m", model], ExitCode.USAGE, "FILE:LINE"),
        (["-m", model], ExitCode.INPUT, "nothing to complete"),
    ]
    for args, code, text in cases:
        res = run(args)
        err = res.stderr.decode()
        assert res.returncode == code, (args, err)
        assert text in err and "Traceback" not in err, (args, err)


def test_no_model_for_completion_names_the_fix(tmp_path):
    """Nothing downloaded (and the demo never counts): the error says what to pull."""
    src = tmp_path / "app.py"
    src.write_text(SOURCE)
    res = run([f"{src}:2"], env={"STARCHAT_HOME": str(tmp_path / "empty-home")})
    assert res.returncode == ExitCode.MODEL_NOT_FOUND
    err = res.stderr.decode()
    assert "starchat pull" in err and "demo model has no FIM tokens" in err
