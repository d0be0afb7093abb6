"""Every numeric option of every command is range-checked at parse time: exit 3, the option named.

The options are found by walking the real command tree, so a numeric option added later
without a check fails here.
"""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from starchat_cli.cli.app import app
from starchat_cli.core.errors import ExitCode

runner = CliRunner()

# Values out of range for each option (beyond the -5 every numeric option refuses).
EXTRA_BAD = {
    "--port": ["0", "65536", "99999"],
    "--max-tokens-limit": ["0"],
    "--max-body": ["0"],
    "--limit": ["0"],
    "--top-p": ["1.5"],
    "--temperature": ["9"],
    "--ctx": ["0", "63"],
    "--max-tokens": ["0"],
    "--threads": ["0"],
}
# Arguments a command needs before its options are parsed.
POSITIONAL = {("quantize",): ["demo"], ("sessions", "search"): ["x"], ("edit",): ["x.py", "rename"]}


def numeric_options() -> list[tuple[tuple[str, ...], str]]:
    found = []

    def walk(cmd, path):
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, (*path, name))
        for p in cmd.params:
            annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if annotation in (int, float) and p.opts and p.opts[0].startswith("--"):
                found.append((path, max(p.opts, key=len)))

    walk(typer.main.get_command(app), ())
    return found


OPTIONS = numeric_options()


def cases():
    for path, flag in OPTIONS:
        bad = ["-5"] + (
            EXTRA_BAD.get(flag, []) if not (flag == "--threads" and path == ("quantize",)) else []
        )
        if path == ("doctor",) and flag == "--ctx":
            bad = ["-5", "0"]
        for value in bad:
            yield pytest.param(path, flag, value, id=f"{' '.join(path)} {flag} {value}")


def test_the_tree_has_the_numeric_options_we_know():
    flags = {(" ".join(p), f) for p, f in OPTIONS}
    for known in [
        ("ask", "--temperature"),
        ("ask", "--top-p"),
        ("ask", "--seed"),
        ("ask", "--max-tokens"),
        ("serve", "--port"),
        ("serve", "--max-body"),
        ("serve", "--max-tokens-limit"),
        ("quantize", "--threads"),
        ("sessions list", "--limit"),
        ("doctor", "--ctx"),
        ("chat", "--ctx"),
        ("edit", "--temperature"),
        ("complete", "--top-p"),
    ]:
        assert known in flags, known


@pytest.mark.parametrize(("path", "flag", "value"), list(cases()))
def test_out_of_range_is_a_config_error(path, flag, value):
    args = [*path, *POSITIONAL.get(path, []), f"{flag}={value}"]
    res = runner.invoke(app, args)
    assert res.exit_code == ExitCode.CONFIG, (args, res.output)
    assert flag in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--port", "8080", "--max-body", "1", "--max-tokens-limit", "1", "--help"],
        ["quantize", "--threads", "0", "--help"],
        ["sessions", "list", "--limit", "1"],
    ],
)
def test_in_range_values_pass(args):
    assert runner.invoke(app, args).exit_code == 0
