"""Intel AMX in llama.cpp: used where it works, left out where it crashes, never a segfault.

    status = amx_status("auto")          # at most one probe per llama.cpp build + CPU + kernel
    with load_mode(status.load_mode):    # around llama_cpp.Llama(...)
        llm = llama_cpp.Llama(path, ...)

llama.cpp built with native CPU flags on a CPU with AMX (Sapphire Rapids and later Xeons, most
cloud VMs) puts every quantized weight into its AMX buffer, and in some builds its AMX matmul
faults on the first prompt batch (ggml-org/llama.cpp#20824): the whole process dies with SIGSEGV.
Whether it does depends on the compiler and the build, so it is found out rather than assumed:
a child process (:mod:`starchat_cli.engine.llamacpp.amx_probe`) runs a tiny model through the AMX path;
its exit status is the answer. When it crashed, the next child tries llama.cpp's own choice minus
AMX (the CPU repack buffers kept: nearly as fast), then no extra buffer types at all. The outcome
is remembered in the cache dir and probed again only when the llama.cpp build, the CPU or the
kernel changes. Where the CPU or the build has no AMX nothing is probed and nothing changes.

The ``amx`` setting (config key, ``STARCHAT_AMX``): ``auto`` (the above), ``on`` (use it, no
probe), ``off`` (never, no probe).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from starchat_cli.core.keyed import KeyedFile

SETTINGS = ("auto", "on", "off")
PROBE_MODES = ("default", "drop-amx", "no-extra")  # llama.cpp's choice; minus AMX; no extra buffers
PROBE_TIMEOUT = 60.0  # seconds per child; the probe itself takes well under one on a 2-core VM
PROBE_VERSION = 1  # bump when the probe changes what it checks: old verdicts are then re-probed
FILE_NAME = "amx-probe.json"
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # a child ended so was stopped, not crashed
REBUILD_WITHOUT_AMX = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON '
    '-DGGML_AVX512_BF16=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install --force-reinstall --no-cache-dir llama-cpp-python"
)


# -- what the CPU and the build offer ----------------------------------------------------------


def cpu_info_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no AMX path in llama.cpp's builds there either
        return ""


def cpu_has_amx(cpuinfo: str) -> bool:
    """The CPU offers AMX tiles with int8 (what llama.cpp's AMX kernels use)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return {"amx_tile", "amx_int8"} <= flags
    return False


def cpu_name(cpuinfo: str) -> str:
    """The CPU model as the kernel names it, with family/model/stepping (one line)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "cpu family", "model", "stepping") and key not in fields:
            fields[key] = value.strip()
        if not line.strip() and fields:
            break
    name = fields.get("model name") or platform.processor() or platform.machine()
    ids = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return f"{name} ({ids})"


def build_has_amx(system_info: str) -> bool:
    """llama.cpp was compiled with its AMX kernels (``AMX_INT8 = 1`` in its system info)."""
    return "AMX_INT8 = 1" in system_info


# -- the verdict ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmxStatus:
    """What starchat does about AMX in this process, and why."""

    state: str  # absent | used | avoided | off | unknown (not probed yet, and not allowed to)
    load_mode: str = "default"  # one of PROBE_MODES: how models are loaded
    detail: str = ""  # why: "SIGSEGV in the probe", "no AMX in this CPU", ...
    probe_seconds: float = 0.0  # what probing cost in this process (0.0: remembered or not needed)
    probed_at: str = ""  # when the remembered verdict was measured

    def describe(self) -> str:
        """One line for ``-v`` and ``doctor``."""
        if self.state == "absent":
            return f"AMX: not used ({self.detail})"
        if self.state == "used":
            return f"AMX: used ({self.detail})" if self.detail else "AMX: used"
        if self.state == "off":
            return f"AMX: off (amx = off){_kept(self.load_mode)}"
        if self.state == "unknown":
            return (
                "AMX: not probed yet (the first model load probes it once; so does `starchat doctor --load`)"
            )
        return f"AMX: crashes in this llama.cpp build ({self.detail} in the probe), loading without it{_kept(self.load_mode)}"

    @property
    def rebuild_hint(self) -> str:
        """How to build llama-cpp-python without AMX ("" where nothing needs it)."""
        return (
            f"to rebuild llama-cpp-python without AMX: {REBUILD_WITHOUT_AMX}"
            if self.state == "avoided"
            else ""
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "summary": self.describe(), "rebuild": self.rebuild_hint}


def _kept(mode: str) -> str:
    return (
        " (CPU repack kept)"
        if mode == "drop-amx"
        else " (no CPU repack either)"
        if mode == "no-extra"
        else ""
    )


@dataclass(frozen=True)
class ProbeRun:
    """One child's outcome."""

    mode: str
    ok: bool
    detail: str  # "ok", "SIGSEGV", "timed out after 60 s", "exit 1: ..."
    seconds: float
    amx_buffer: bool = False


Runner = Callable[[str], ProbeRun]


def probe_command(mode: str) -> list[str]:
    return [sys.executable, "-m", "starchat_cli.engine.llamacpp.amx_probe", mode]


def run_child(mode: str, command: Sequence[str] | None = None, timeout: float = PROBE_TIMEOUT) -> ProbeRun:
    """Run the probe child for ``mode`` (``command`` replaces it in tests) and read its fate."""
    cmd = list(command) if command is not None else probe_command(mode)
    started = time.perf_counter()
    try:
        res = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=_child_env()
        )
    except subprocess.TimeoutExpired:
        return ProbeRun(mode, False, f"timed out after {timeout:g} s", time.perf_counter() - started)
    except OSError as exc:
        return ProbeRun(mode, False, f"could not start: {exc.strerror or exc}", time.perf_counter() - started)
    seconds = time.perf_counter() - started
    if -res.returncode in INTERRUPTS:  # stopped from outside (Ctrl-C, kill): no verdict to keep
        raise KeyboardInterrupt()
    if res.returncode < 0:
        return ProbeRun(mode, False, _signal_name(-res.returncode), seconds)  # the crash this is about
    report: dict = {}
    for line in reversed(res.stdout.decode("utf-8", "replace").splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        report = found if isinstance(found, dict) else {}
        break
    if res.returncode == 0 and report.get("ok"):
        return ProbeRun(mode, True, "ok", seconds, bool(report.get("amx_buffer")))
    why = report.get("error") or res.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
    why = why if isinstance(why, str) else why[0]
    return ProbeRun(mode, False, f"exit {res.returncode}: {why}"[:200], seconds)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("STARCHAT_LLAMA_LOG", None)  # the child's log is its own business
    return env


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def probe(runner: Runner = run_child) -> dict[str, object]:
    """Find the fastest mode that works: llama.cpp's own choice, then minus AMX, then no extras."""
    runs = []
    for mode in PROBE_MODES:
        run = runner(mode)
        runs.append(run)
        if run.ok:
            break
    first, last = runs[0], runs[-1]
    return {
        "works": first.ok,
        "load_mode": last.mode if last.ok else "no-extra",
        "detail": first.detail if not first.ok else ("AMX kernels ran" if first.amx_buffer else "ok"),
        "seconds": round(sum(r.seconds for r in runs), 3),
        "runs": [asdict(r) for r in runs],
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _conclusive(verdict: dict[str, object]) -> bool:
    """A mode ran, or the last died as native code dies (a signal, a hang); a probe that could not
    even start or import ("exit 1: No module named ...") is not remembered: it runs again."""
    runs = verdict.get("runs")
    if not isinstance(runs, list) or not runs:
        return False
    if any(run.get("ok") for run in runs):
        return True
    return not str(runs[-1].get("detail", "")).startswith(("exit ", "could not start"))


# -- remembering it --------------------------------------------------------------------------------


class ProbeCache(KeyedFile):
    """Verdicts by key in one JSON file (atomic writes; anything damaged is probed again)."""

    def get(self, key: str) -> dict | None:
        entry = self._entry(key)
        if entry is None or not isinstance(entry.get("works"), bool):
            return None
        if entry.get("load_mode") not in PROBE_MODES or not isinstance(entry.get("detail"), str):
            return None
        return entry

    def put(self, key: str, verdict: dict) -> None:
        self._put(key, verdict)  # an unwritable cache dir means probing again next time, nothing worse


def default_cache() -> ProbeCache:
    from starchat_cli.core.paths import get_paths

    return ProbeCache(get_paths().cache_dir / FILE_NAME)


def build_fingerprint() -> str:
    """llama-cpp-python's version and its CPU library file (a rebuild changes size or mtime)."""
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    parts = [f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}"]
    for name in ("libggml-cpu.so", "libggml.so", "libllama.so"):
        try:
            st = (lib / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            continue
    return " ".join(parts)


def probe_key(cpuinfo: str) -> str:
    return f"v{PROBE_VERSION} | {build_fingerprint()} | {cpu_name(cpuinfo)} | kernel {platform.release()}"


# -- deciding, once per process ----------------------------------------------------------------------

_DECIDED: dict[str, AmxStatus] = {}
_LOCK = threading.Lock()


def amx_status(setting: str = "auto", *, may_probe: bool = True) -> AmxStatus:
    """What to do about AMX for models loaded in this process (decided once per setting;
    :func:`decide` does the work). ``may_probe=False`` (``doctor`` without ``--load``) reports a
    remembered verdict but never starts the probe: a command that loads no model runs none."""
    with _LOCK:
        if setting not in _DECIDED:
            status = decide(setting, may_probe=may_probe)
            if status.state == "unknown":
                return status
            _DECIDED[setting] = status
        return _DECIDED[setting]


def decide(
    setting: str,
    *,
    cpuinfo: str | None = None,
    system_info: str | None = None,
    cache: ProbeCache | None = None,
    runner: Runner = run_child,
    may_probe: bool = True,
) -> AmxStatus:
    if setting not in SETTINGS:
        raise ValueError(f"amx must be one of {', '.join(SETTINGS)}")
    cpuinfo = cpu_info_text() if cpuinfo is None else cpuinfo
    if system_info is None:
        import llama_cpp

        system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    if not cpu_has_amx(cpuinfo):
        return AmxStatus("absent", detail="no AMX in this CPU")
    if not build_has_amx(system_info):
        return AmxStatus("absent", detail="this llama.cpp build has no AMX kernels")
    if setting == "off":
        return AmxStatus("off", "drop-amx")
    if setting == "on":
        return AmxStatus("used", detail="amx = on, not probed")
    cache = cache if cache is not None else default_cache()
    key = probe_key(cpuinfo)
    verdict = cache.get(key)
    seconds = 0.0
    if verdict is None and not may_probe:
        return AmxStatus("unknown", "drop-amx", "not probed yet")
    if verdict is None:
        verdict = probe(runner)
        seconds = float(verdict["seconds"])  # type: ignore[arg-type]
        if _conclusive(verdict):
            cache.put(key, verdict)
    when = str(verdict.get("measured", ""))
    if verdict["works"]:
        return AmxStatus("used", detail=str(verdict["detail"]), probe_seconds=seconds, probed_at=when)
    return AmxStatus(
        "avoided", str(verdict["load_mode"]), str(verdict["detail"]), probe_seconds=seconds, probed_at=when
    )


# -- loading in a mode ----------------------------------------------------------------------------


def prepare_mode(mode: str) -> bool:
    """Set this process up to load models in ``mode``; whether llama.cpp may use extra buffer types."""
    if mode == "default":
        return True
    if mode == "drop-amx":
        from starchat_cli.engine.llamacpp.ggml_bufts import drop_cpu_buffer_type

        return drop_cpu_buffer_type("AMX")  # False: it could not be dropped alone, so no extras
    return False


@contextmanager
def load_mode(mode: str) -> Iterator[None]:
    """Around ``llama_cpp.Llama(...)``: models made inside load in ``mode``."""
    if prepare_mode(mode):
        yield
        return
    from starchat_cli.engine.llamacpp.ggml_bufts import without_extra_buffer_types

    with without_extra_buffer_types():
        yield


__all__ = [
    "AmxStatus",
    "ProbeCache",
    "ProbeRun",
    "amx_status",
    "build_has_amx",
    "cpu_has_amx",
    "decide",
    "load_mode",
    "prepare_mode",
    "probe",
    "run_child",
    "safe_loading",
]


@contextmanager
def safe_loading(setting: str = "auto") -> Iterator[None]:
    """``with safe_loading(): llama_cpp.Llama(...)``, for code that makes its own Llama objects
    (benchmarks, converter checks): loads as :class:`LlamaCppBackend` does on this machine."""
    with load_mode(amx_status(setting).load_mode):
        yield
