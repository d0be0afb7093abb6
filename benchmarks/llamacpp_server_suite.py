"""llama.cpp's own server tests, run against `starchat serve` instead of `llama-server`.

    python benchmarks/llamacpp_server_suite.py /path/to/llama.cpp            # a checkout, or a bare git dir
    python benchmarks/llamacpp_server_suite.py SNAPSHOT --files test_infill.py --keep /tmp/suite

llama.cpp tests its server with pytest (``tools/server/tests``): ``utils.py``'s ``ServerProcess``
builds a ``llama-server`` command line from a preset's fields and starts it, and the tests talk
HTTP to it (``requests`` and the ``openai`` client). This script copies ``utils.py``,
``conftest.py`` and the chosen ``unit/`` files into a scratch folder, and loads a small pytest
plugin (written next to them) that replaces ``ServerProcess.start`` with one that starts
``python -m starchat_cli serve`` from this repository, mapping the fields starchat has:

    model_file / model_hf_repo  ->  -m GGUF: the demo model (SmolLM2) for the chat presets, a
                                    tiny random StarCoder2 with the real FIM tokens (built
                                    here by converters/synthetic.py) for ``*infill*`` presets
    server_host, server_port    ->  --host, --port          n_ctx      ->  --ctx
    api_key                     ->  --api-key               temperature, seed -> STARCHAT_TEMPERATURE, STARCHAT_SEED
    n_predict                   ->  STARCHAT_MAX_TOKENS     (the rest: no equivalent, dropped)

The presets' Hub downloads are skipped (``ServerPreset.load_all`` does nothing; ``wget`` is
stubbed when it is not installed). Each test file runs in its own pytest process; the script
prints, per file, how many tests passed, failed and were skipped, and the failure reasons
grouped (the first line of each failure's message, ids and timings blanked). Needs pytest, requests and
openai (the test extra has them). Not part of the test suite: it needs the llama.cpp sources.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILES = ("test_chat_completion.py", "test_completion.py", "test_infill.py", "test_security.py")
TESTS = "tools/server/tests"

# The pytest plugin: replaces the server start with `starchat serve` and records each outcome.
PLUGIN = r"""
import json, os, subprocess, sys, time, types

if "wget" not in sys.modules:
    try:
        import wget  # noqa: F401
    except ImportError:
        sys.modules["wget"] = types.ModuleType("wget")  # only used to download models: never here

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import requests
import utils

CHAT_MODEL = os.environ["SUITE_CHAT_GGUF"]
FIM_MODEL = os.environ["SUITE_FIM_GGUF"]
REPO = os.environ["SUITE_STARCHAT_REPO"]
RESULTS = os.environ["SUITE_RESULTS"]


def _model(server):
    names = " ".join(str(x) for x in (server.model_file, server.model_hf_repo, server.model_alias) if x)
    if "infill" in names:
        return FIM_MODEL
    return CHAT_MODEL


def start(self, timeout_seconds=120):
    args = [sys.executable, "-m", "starchat_cli", "serve", "-m", _model(self),
            "--host", self.server_host, "--port", str(self.server_port)]
    if self.n_ctx:
        args += ["--ctx", str(self.n_ctx)]
    if self.api_key:
        args += ["--api-key", self.api_key]
    env = {**os.environ}
    env["STARCHAT_TEMPERATURE"] = str(self.temperature)
    if self.seed is not None:
        env["STARCHAT_SEED"] = str(self.seed)
    if self.n_predict and self.n_predict > 0:  # -1 (no limit) is starchat's default anyway
        env["STARCHAT_MAX_TOKENS"] = str(self.n_predict)
    print("suite: starting", " ".join(args))
    self.process = subprocess.Popen(args, cwd=REPO, env=env)
    utils.server_instances.add(self)
    end = time.time() + timeout_seconds
    while time.time() < end:
        if self.process.poll() is not None:
            raise RuntimeError(f"starchat serve exited with {self.process.returncode}")
        try:
            if requests.get(f"http://{self.server_host}:{self.server_port}/health", timeout=2).status_code == 200:
                self.ready = True
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError("starchat serve did not start")


utils.ServerProcess.start = start
utils.ServerPreset.load_all = staticmethod(lambda: None)


def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.failed or report.skipped):
        return
    message = ""
    if report.failed or report.skipped:
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            message = crash.message
        elif isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        else:
            message = str(report.longrepr)
    with open(RESULTS, "a") as out:
        out.write(json.dumps({"id": report.nodeid, "when": report.when, "outcome": report.outcome,
                              "message": message}) + "\n")
"""


def copy_tests(source: Path, dest: Path, files: tuple[str, ...]) -> None:
    """``utils.py``, ``conftest.py`` and ``unit/FILES`` from a checkout or a (bare) git directory."""
    wanted = ["utils.py", "conftest.py", "pytest.ini", *(f"unit/{f}" for f in files)]
    tests = source / TESTS
    (dest / "unit").mkdir(parents=True, exist_ok=True)
    if tests.is_dir():
        for name in wanted:
            shutil.copy(tests / name, dest / name)
        return
    archive = subprocess.run(
        ["git", f"--git-dir={source}", "archive", "HEAD", *(f"{TESTS}/{n}" for n in wanted)],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                name = member.name[len(TESTS) + 1 :]
                data = tar.extractfile(member)
                assert data is not None
                (dest / name).write_bytes(data.read())


def fim_model(folder: Path) -> Path:
    """A tiny random StarCoder2 with the real FIM tokens at their real ids (built once per folder)."""
    from converters.convert import convert_checkpoint
    from converters.synthetic import TinySpec, build_checkpoint

    out = folder / "tiny-starcoder2-fim.gguf"
    if not out.exists():
        spec = TinySpec("starcoder2", tied=True, chat="none", vocab="starcoder2", n_ctx=4096, seed=22)
        build_checkpoint(folder / "ckpt", spec)
        convert_checkpoint(folder / "ckpt", out, "f32")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_file(work: Path, name: str, env: dict[str, str]) -> list[dict[str, str]]:
    results = work / f"{name}.jsonl"
    results.unlink(missing_ok=True)
    env = {**env, "SUITE_RESULTS": str(results), "PORT": str(free_port())}
    cmd = [sys.executable, "-m", "pytest", f"unit/{name}", "-p", "starchat_suite", "-p", "no:cacheprovider"]
    cmd += ["-q", "-x"] if env.get("SUITE_FAIL_FAST") else ["-q"]
    log = work / f"{name}.log"
    with log.open("w") as out:
        subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    if not results.exists():
        return [{"id": name, "outcome": "failed", "message": f"pytest collected nothing: see {log}"}]
    return [json.loads(line) for line in results.read_text().splitlines()]


def reason(message: str) -> str:
    """A failure's first line (with the next when it is pytest's ``assert 404 == 200`` and its
    ``where``), long ids and timings blanked so the same cause groups together."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["(no message)"]
    text = lines[0]
    if text.startswith("assert") and len(lines) > 1:
        text += " | " + lines[1]
    text = re.sub(r"(chatcmpl|cmpl)-[0-9a-f]+|0x[0-9a-f]+|\d+\.\d+", "#", text)
    return text[:160]


def summarize(name: str, rows: list[dict[str, str]], top: int) -> None:
    outcome: dict[str, str] = {}
    messages: dict[str, str] = {}
    for row in rows:  # a test's worst phase wins: a failed teardown fails the test
        if row["outcome"] == "failed" or row["id"] not in outcome:
            outcome[row["id"]] = row["outcome"]
            messages[row["id"]] = row.get("message", "")
    counts = collections.Counter(outcome.values())
    print(f"\n{name}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    reasons = collections.Counter(reason(messages[i]) for i, o in outcome.items() if o == "failed")
    for text, n in reasons.most_common(top):
        print(f"  {n:3d} x {text}")
    skips = collections.Counter(reason(messages[i]) for i, o in outcome.items() if o == "skipped")
    for text, n in skips.most_common(3):
        print(f"  skipped {n:3d} x {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("llamacpp", type=Path, help="a llama.cpp checkout or its git directory")
    parser.add_argument("--files", nargs="*", default=list(FILES), help="unit/ test files to run")
    parser.add_argument(
        "--keep", type=Path, help="work here and keep it (logs, models) instead of a temp dir"
    )
    parser.add_argument("--top", type=int, default=8, help="failure reasons shown per file")
    args = parser.parse_args()

    from starchat_cli.models.store import demo_model_path

    work = args.keep or Path(tempfile.mkdtemp(prefix="llamacpp-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_tests(args.llamacpp, work, tuple(args.files))
    (work / "starchat_suite.py").write_text(PLUGIN)
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "SUITE_CHAT_GGUF": str(demo_model_path()),
        "SUITE_FIM_GGUF": str(fim_model(work / "models")),
        "SUITE_STARCHAT_REPO": str(ROOT),
        "STARCHAT_HOME": str(home),
        "PYTHONPATH": str(work),
    }
    print(f"working in {work} (per-file logs: FILE.log)")
    for name in args.files:
        summarize(name, run_file(work, name, env), args.top)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
