"""Start-up cost of ``starchat --help``, relative to a bare Python interpreter.

What it measures
----------------
The wall time of a complete ``starchat --help`` process (interpreter start, imports,
Typer building the help text, exit), divided by the wall time of ``python -c pass``
on the same interpreter. The baseline removes what starchat cannot change (the
interpreter's own start-up and the machine's speed), so the RATIO says how much the
CLI's imports and help rendering cost on top of Python itself.

Each command is run as a subprocess ``--runs`` times (default 15) after ``--warmup``
runs (default 2) that fill the OS page cache and are not counted. The commands are
interleaved run by run, so slow drift of the machine affects them all alike.

Commands timed:

* ``python -c pass``                          the baseline
* ``python -m starchat_cli --help``            always (``sys.executable``)
* ``starchat --help``                          the console script found on PATH, if any
* ``<bin dir of sys.executable>/starchat``     only when the PATH entry is a wrapper such
                                              as a pyenv shim, which adds its own cost

The same run also checks, in a fresh interpreter, that importing the app module
(``import starchat_cli.cli.app``) does not pull ``llama_cpp``, ``torch`` or
``textual`` into ``sys.modules``; and the same after running ``--help`` in-process.

How to read the output
----------------------
For each command: the median and the minimum in seconds (median is the figure to
compare; min shows the best case with no scheduling noise). ``RATIO`` is the median of
the starchat command over the median of ``python -c pass``: 1.0 would mean starchat
costs nothing over a bare interpreter; typical Typer CLIs sit well above that. For
context a constant is printed (not measured here): simonw/llm's ``llm --help`` takes
about 0.6 s on this machine. The import checks print ``yes`` when the module stays
out of ``sys.modules`` (what we want) and ``no`` when it is imported.

Timing figures are printed, never asserted on.

    python benchmarks/startup.py [--runs 15] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# For context only, not measured by this script.
LLM_HELP_SECONDS = 0.6

HEAVY_MODULES = ("llama_cpp", "torch", "textual")

IMPORT_CHECK = r"""
import json, sys
heavy = {heavy!r}

def loaded():
    return {{m: any(k == m or k.startswith(m + ".") for k in sys.modules) for m in heavy}}

import starchat_cli.cli.app as app_module
after_import = loaded()
sys.argv = ["starchat", "--help"]
import io, contextlib
with contextlib.redirect_stdout(io.StringIO()):
    try:
        app_module.main()
    except SystemExit:
        pass
after_help = loaded()
print(json.dumps({{"import": after_import, "help": after_help}}))
"""


def time_once(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed


def is_wrapper(path: str) -> bool:
    """True when a console script on PATH is a shell wrapper (pyenv shim, asdf...), not Python."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline()
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" not in first


def commands() -> list[tuple[str, list[str]]]:
    cmds: list[tuple[str, list[str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("python -m starchat_cli --help", [sys.executable, "-m", "starchat_cli", "--help"]),
    ]
    on_path = shutil.which("starchat")
    if on_path:
        cmds.append((f"starchat --help  [{on_path}]", [on_path, "--help"]))
        direct = Path(sys.executable).parent / "starchat"
        if is_wrapper(on_path) and direct.is_file() and os.access(direct, os.X_OK):
            cmds.append((f"starchat --help  [{direct}]", [str(direct), "--help"]))
    return cmds


def import_check() -> dict[str, dict[str, bool]]:
    code = IMPORT_CHECK.format(heavy=HEAVY_MODULES)
    proc = subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"import check failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per command (default 2)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    cmds = commands()
    print(f"python: {sys.executable} ({sys.version.split()[0]})")
    print(f"runs: {args.runs} timed + {args.warmup} warm-up per command, interleaved")
    if not shutil.which("starchat"):
        print("starchat console script: not on PATH (only `python -m starchat_cli` is timed)")

    for _ in range(args.warmup):
        for _, cmd in cmds:
            time_once(cmd)
    times: dict[str, list[float]] = {label: [] for label, _ in cmds}
    for _ in range(args.runs):
        for label, cmd in cmds:
            times[label].append(time_once(cmd))

    width = max(len(label) for label, _ in cmds)
    print()
    print(f"{'command'.ljust(width)}  median s  min s")
    for label, _ in cmds:
        print(f"{label.ljust(width)}  {statistics.median(times[label]):8.3f}  {min(times[label]):5.3f}")

    base_label = cmds[0][0]
    base = statistics.median(times[base_label])
    print()
    for label, _ in cmds[1:]:
        med = statistics.median(times[label])
        print(f"RATIO {label} / {base_label} = {med / base:.2f}  ({med:.3f} s / {base:.3f} s)")
    print(
        f"for context (constant, not measured): simonw/llm's `llm --help` takes about "
        f"{LLM_HELP_SECONDS} s on this machine"
    )

    checks = import_check()
    print()
    for stage, title in (
        ("import", "after `import starchat_cli.cli.app`"),
        ("help", "after running `--help`"),
    ):
        for mod in HEAVY_MODULES:
            ok = not checks[stage][mod]
            print(f"{mod} not in sys.modules {title}: {'yes' if ok else 'no'}")


if __name__ == "__main__":
    main()
