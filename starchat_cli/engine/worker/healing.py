"""Self-healing: which crash of a worker is worth a retry, with what safer settings, and memory of it.

    crash = read_crash(returncode, log_text, "reading the prompt")   # SIGSEGV, abort, out of memory...
    step = next_step(spec, crash, applied=())    # Step("amx-off", "without AMX", spec with amx="off")
    memory = Fallbacks.default()
    spec, applied = memory.apply(spec)           # what worked before on this machine, build and model
    memory.remember(original_spec, applied + ("amx-off",), crash.describe())

A worker that dies by a native fault (a segfault, an abort on a failed GGML_ASSERT, a GPU out of
memory) while loading or replying is retried once with the next safer configuration:

- out of memory (the log says so) with GPU layers: half the layers (a number of them), then none;
- any other fault: Intel AMX off (the CPU has AMX tiles and ``amx`` is not ``off`` already), then
  flash attention off, then no GPU layers.

A kill from outside (SIGKILL, SIGTERM, SIGINT: the user, ``stop``, the kernel's OOM killer) is not
a fault of the settings and is never retried. What worked is remembered per machine (CPU and
kernel), llama.cpp build and model file, in the cache dir's ``worker-fallbacks.json``; the next
call starts with it instead of crashing first. ``starchat doctor`` lists it,
``starchat doctor --forget-fallbacks`` clears it. This module never imports llama.cpp.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import signal
import time
from dataclasses import dataclass, replace
from importlib import metadata, util
from pathlib import Path
from typing import Any

from starchat_cli.core.keyed import KeyedFile
from starchat_cli.engine.worker.spec import EngineSpec

FILE_NAME = "worker-fallbacks.json"
FAULTS = {  # signals a native fault ends a process with: the settings may be to blame
    signal.SIGSEGV: "SIGSEGV",
    signal.SIGABRT: "SIGABRT",
    signal.SIGBUS: "SIGBUS",
    signal.SIGILL: "SIGILL",
    signal.SIGFPE: "SIGFPE",
}
# faulthandler's first line (the worker enables it) names the signal when we did not start the
# worker and so cannot read its exit status
_FATAL = {
    "Segmentation fault": "SIGSEGV",
    "Aborted": "SIGABRT",
    "Bus error": "SIGBUS",
    "Illegal instruction": "SIGILL",
    "Floating-point exception": "SIGFPE",
    "Floating point exception": "SIGFPE",
}
_OOM = re.compile(
    r"out of memory|failed to allocate|cudaMalloc failed|unable to allocate|OutOfDeviceMemory", re.I
)
STEPS = {  # name: how the user reads it ("retrying ...")
    "fewer-gpu-layers": "with fewer GPU layers",
    "amx-off": "without Intel AMX",
    "no-flash-attn": "without flash attention",
    "no-gpu": "without GPU layers",
}


@dataclass(frozen=True)
class Crash:
    """How a worker died, and what it was doing."""

    doing: str  # "loading", "reading the prompt", "replying"
    signal: str = ""  # "SIGSEGV", ... ("" when unknown)
    exit_code: int | None = None
    assertion: str = ""  # llama.cpp's failed GGML_ASSERT line, if it logged one
    oom: bool = False  # the log says memory ran out

    @property
    def fault(self) -> bool:
        """A native fault the settings may cause (worth a retry), not a kill from outside."""
        return bool(self.signal in FAULTS.values() or self.assertion or self.oom)

    def describe(self) -> str:
        what = self.signal or ("an abort" if self.assertion else "")
        what = what or ("exit " + str(self.exit_code) if self.exit_code is not None else "a crash")
        if self.oom:
            what += ", out of memory"
        return f"{what} while {self.doing}"


def read_crash(returncode: int | None, log_text: str, doing: str) -> Crash:
    """The crash a worker's exit status (None: not ours to read) and its log's last lines tell of."""
    sig = ""
    if returncode is not None and returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
    tail = log_text[-8000:]
    if not sig:
        for line in tail.splitlines():
            if line.startswith("Fatal Python error: "):
                sig = _FATAL.get(line.removeprefix("Fatal Python error: ").strip(), sig)
    assertion = next((line.strip() for line in tail.splitlines() if "GGML_ASSERT" in line), "")
    code = returncode if returncode is not None and returncode >= 0 else None
    return Crash(doing, sig, code, assertion[:200], bool(_OOM.search(tail)))


@dataclass(frozen=True)
class Step:
    name: str  # a key of STEPS
    spec: EngineSpec  # the settings to retry with

    def describe(self) -> str:
        return STEPS[self.name]


def next_step(spec: EngineSpec, crash: Crash, applied: tuple[str, ...] = ()) -> Step | None:
    """The next safer settings after ``crash`` (None: nothing left to try, or not a fault)."""
    if not crash.fault:
        return None
    on_gpu = spec.gpu not in ("off", 0, "0")
    if crash.oom:  # only the GPU's share of the model can be made smaller
        if on_gpu and str(spec.gpu).isdigit() and int(spec.gpu) > 1 and "fewer-gpu-layers" not in applied:
            return Step("fewer-gpu-layers", replace(spec, gpu=int(spec.gpu) // 2))
        return Step("no-gpu", replace(spec, gpu="off")) if on_gpu else None
    if spec.amx != "off" and cpu_has_amx_tiles() and "amx-off" not in applied:
        return Step("amx-off", replace(spec, amx="off"))
    if spec.flash_attn and "no-flash-attn" not in applied:
        return Step("no-flash-attn", replace(spec, flash_attn=False))
    if on_gpu and "no-gpu" not in applied:
        return Step("no-gpu", replace(spec, gpu="off"))
    return None


def apply_steps(spec: EngineSpec, steps: tuple[str, ...]) -> EngineSpec:
    """``spec`` with remembered steps applied (unknown names, from a newer starchat, are skipped)."""
    for name in steps:
        if name == "amx-off":
            spec = replace(spec, amx="off")
        elif name == "no-flash-attn":
            spec = replace(spec, flash_attn=False)
        elif name == "no-gpu":
            spec = replace(spec, gpu="off")
        elif name == "fewer-gpu-layers" and str(spec.gpu).isdigit():
            spec = replace(spec, gpu=max(int(spec.gpu) // 2, 1))
    return spec


def cpu_has_amx_tiles() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next(
        (line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return "amx_tile" in flags


def build_fingerprint() -> str:
    """llama-cpp-python's version and its library files (a rebuild changes size or mtime), read
    without importing it (the faces that talk to a worker never load llama.cpp)."""
    found = util.find_spec("llama_cpp")
    folders = list(found.submodule_search_locations or []) if found is not None else []
    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        version = "?"
    parts = [f"llama-cpp-python {version}"]
    for name in ("libggml-cpu.so", "libggml.so", "libllama.so"):
        for folder in folders:
            try:
                st = (Path(folder) / "lib" / name).stat()
            except OSError:
                continue
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return " ".join(parts)


def machine() -> str:
    """The CPU model and the kernel: what a native fault depends on besides the build."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        name = next(
            (ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("model name")), ""
        )
    except OSError:
        name = ""
    return f"{name or platform.processor() or platform.machine()} | kernel {platform.release()}"


class Fallbacks(KeyedFile):
    """Remembered steps by (machine, build, model file), in one JSON file (atomic writes; a damaged
    file is an empty memory)."""

    @classmethod
    def default(cls) -> Fallbacks:
        from starchat_cli.core.paths import get_paths

        return cls(get_paths().cache_dir / FILE_NAME)

    def _key(self, spec: EngineSpec) -> str:
        try:
            st = os.stat(spec.path)
            identity = f"{os.path.realpath(spec.path)}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            identity = spec.path
        text = "|".join([machine(), build_fingerprint(), identity])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def steps_for(self, spec: EngineSpec) -> tuple[str, ...]:
        entry = self._entry(self._key(spec))
        steps = entry.get("steps") if entry is not None else None
        return tuple(s for s in steps if isinstance(s, str)) if isinstance(steps, list) else ()

    def apply(self, spec: EngineSpec) -> tuple[EngineSpec, tuple[str, ...]]:
        """``spec`` with what worked before for its model here, and the steps that were applied."""
        steps = self.steps_for(spec)
        return apply_steps(spec, steps), steps

    def remember(self, spec: EngineSpec, steps: tuple[str, ...], why: str) -> None:
        """Start ``spec``'s model with ``steps`` from now on (``spec``: the settings before any step)."""
        self._put(self._key(spec), {
            "model": spec.name or Path(spec.path).stem,
            "path": spec.path,
            "steps": list(steps),
            "why": why,
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "build": build_fingerprint().split(" lib")[0],
        })  # fmt: skip
        # (an unwritable cache dir: the next call crashes and heals again, nothing worse)

    def entries(self) -> list[dict[str, Any]]:
        """What is remembered, for ``doctor``: model, path, steps (as words), why, when."""
        out = []
        for entry in self._read().values():
            if isinstance(entry, dict) and isinstance(entry.get("steps"), list):
                words = [STEPS.get(s, s) for s in entry["steps"]]
                out.append({**entry, "settings": ", ".join(words)})
        return sorted(out, key=lambda e: str(e.get("model", "")))

    def forget(self) -> int:
        """Forget every remembered fallback; how many there were."""
        return self._clear()


__all__ = ["Crash", "Fallbacks", "Step", "apply_steps", "build_fingerprint", "next_step", "read_crash"]
