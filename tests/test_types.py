"""The tree passes mypy (the files and settings in pyproject.toml's [tool.mypy]), as CI expects.

python -m pytest tests/test_types.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .helpers.cli import REPO


def mypy_command() -> list[str]:
    # The mypy of this interpreter's environment, so it sees the same installed packages.
    exe = Path(sys.executable).with_name("mypy")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "mypy"]


def test_mypy():
    res = subprocess.run(mypy_command(), cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
