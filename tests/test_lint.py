"""The tree passes ruff (lint and format), as CI expects."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .helpers.cli import REPO

TARGETS = ["starchat_cli", "converters", "tests", "benchmarks"]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, *args, *TARGETS], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff(args):
    res = ruff(*args)
    assert res.returncode == 0, res.stdout + res.stderr
