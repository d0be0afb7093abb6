"""The real ``starchat`` CLI as a subprocess (``python -m starchat_cli``, run from the repository root).

res = run_starchat(["ask", "-m", "demo", "hi"], env={"STARCHAT_PROMPT_CACHE": "0"})
proc = start_starchat(["pull", "starchat2"], env=env)   # a Popen with stdout/stderr piped
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent


def run_starchat(
    args: list[str],
    *,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI to its end, stdin from a pipe (``input``) or /dev/null, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "starchat_cli", *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )


def start_starchat(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    module: str = "starchat_cli",
    python: tuple[str, ...] = (),
    **popen: Any,
) -> subprocess.Popen:
    """Start the CLI (or another ``python -m`` entry point, ``module``) and return at once.

    ``python``: interpreter options (``("-X", "importtime")``). stdin is /dev/null and
    stdout/stderr are pipes unless ``popen`` says otherwise."""
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
    }
    options.update(popen)
    options.setdefault("cwd", REPO)
    command = [sys.executable, *python, "-m", module, *args]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, **options)
