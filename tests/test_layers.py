"""The layer contracts in pyproject.toml hold (import-linter), and the check can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    return subprocess.run([exe, "--no-cache", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_layer_contracts_are_kept():
    res = lint_imports()
    assert res.returncode == 0, res.stdout + res.stderr
    # Every contract declared in pyproject.toml was checked and kept (none silently skipped).
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"{len(declared)} kept, 0 broken" in res.stdout, res.stdout
    for contract in declared:
        assert f"{contract['name']} KEPT" in res.stdout, contract["name"]


def test_a_reversed_layer_is_reported_broken(tmp_path):
    """The same check on a contract the code breaks (core above engine) fails, naming the import."""
    config = tmp_path / "reversed.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["starchat_cli"]\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "reversed"\ntype = "layers"\n'
        'layers = ["starchat_cli.core", "starchat_cli.engine"]\n'
    )
    res = lint_imports("--config", str(config))
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and "starchat_cli.engine" in res.stdout
