"""What this machine and this llama.cpp build can do: GPUs, free memory, build features.

Every probe degrades to "nothing found" rather than failing: no NVML, no nvidia-smi,
no GPU at all are ordinary states. NVML (the optional ``nvidia-ml-py`` package) is tried
first, then ``nvidia-smi --query-gpu``; on Apple Silicon the Metal working set is
estimated from the machine's memory.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

from starchat_cli.core.units import GIB, MIB

CUDA_REINSTALL = 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
METAL_REINSTALL = 'CMAKE_ARGS="-DGGML_METAL=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'


def default_threads() -> int:
    """Threads for decoding: every usable core on small machines, half (physical) on big ones."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return cpus if cpus <= 4 else max(4, cpus // 2)


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    kind: str  # cuda | metal
    driver: str = ""
    source: str = ""  # nvml | nvidia-smi | sysctl


@dataclass
class BuildInfo:
    llama_cpp_python: str
    gpu_offload: bool
    backends: dict[str, dict[str, str]] = field(default_factory=dict)
    system_info: str = ""

    @property
    def cuda(self) -> bool:
        return "CUDA" in self.backends

    @property
    def metal(self) -> bool:
        return "Metal" in self.backends or "METAL" in self.backends

    @property
    def blas(self) -> bool:
        return "BLAS" in self.backends

    def cpu_features(self) -> list[str]:
        cpu = self.backends.get("CPU", {})
        return [name for name, value in cpu.items() if value == "1"]

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.update(cuda=self.cuda, metal=self.metal, blas=self.blas, cpu_features=self.cpu_features())
        return out


def parse_system_info(text: str) -> dict[str, dict[str, str]]:
    """Parse llama.cpp's ``llama_print_system_info()``: ``CPU : AVX2 = 1 | ... | CUDA : ARCHS = 890 |``."""
    backends: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z][\w-]*)\s*:\s*(.*)$", part)
        if m:
            current = backends.setdefault(m.group(1), {})
            part = m.group(2).strip()
            if not part:
                continue
        if current is None:
            current = backends.setdefault("CPU", {})
        key, _, value = part.partition("=")
        if key.strip():
            current[key.strip()] = value.strip()
    return backends


def build_info() -> BuildInfo:
    import llama_cpp

    text = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return BuildInfo(
        llama_cpp_python=getattr(llama_cpp, "__version__", "?"),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        backends=parse_system_info(text),
        system_info=text.strip(),
    )


# -- NVIDIA ---------------------------------------------------------------------------------


def _nvml_gpus() -> list[GPU] | None:
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver, no device
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GPU(
                    i,
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(mem.total),
                    int(mem.free),
                    "cuda",
                    driver,
                    "nvml",
                )
            )
        return gpus
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


NVIDIA_SMI_QUERY = "index,name,memory.total,memory.free,driver_version"


def parse_nvidia_smi(text: str) -> list[GPU]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version
    --format=csv,noheader,nounits`` (memory in MiB)."""
    gpus = []
    for line in text.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 4:
            continue
        try:
            index, total, free = int(cols[0]), int(float(cols[2])), int(float(cols[3]))
        except ValueError:
            continue  # "[N/A]" and friends
        driver = cols[4] if len(cols) > 4 else ""
        gpus.append(GPU(index, cols[1], total * MIB, free * MIB, "cuda", driver, "nvidia-smi"))
    return gpus


def _nvidia_smi_gpus() -> list[GPU] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run(
            [exe, f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return parse_nvidia_smi(res.stdout)


# -- Apple Silicon ---------------------------------------------------------------------------


def is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def metal_working_set(total_ram: int) -> int:
    """An estimate of Metal's recommendedMaxWorkingSetSize: about 2/3 of memory up to
    36 GiB, 3/4 above (what macOS reports on Apple Silicon machines)."""
    return total_ram * 2 // 3 if total_ram <= 36 * GIB else total_ram * 3 // 4


def _metal_gpus() -> list[GPU] | None:
    if not is_apple_silicon():
        return None
    try:
        res = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5)
        ram = int(res.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    budget = metal_working_set(ram)
    return [GPU(0, "Apple Silicon GPU (Metal)", budget, budget, "metal", "", "sysctl")]


def detect_gpus() -> list[GPU]:
    """GPUs with their free memory, from NVML, nvidia-smi or (Apple Silicon) the RAM size."""
    if os.environ.get("STARCHAT_NO_GPU_PROBE"):
        return []
    for probe in (_nvml_gpus, _nvidia_smi_gpus, _metal_gpus):
        found = probe()
        if found:
            return found
    return []


def build_mismatch(build: BuildInfo, gpus: list[GPU]) -> str | None:
    """A one-line hint when the machine has a GPU the installed llama.cpp build cannot use."""
    if build.gpu_offload:
        return None
    if any(g.kind == "cuda" for g in gpus):
        return f"this machine has an NVIDIA GPU but llama-cpp-python was built for the CPU only: {CUDA_REINSTALL}"
    if any(g.kind == "metal" for g in gpus):
        return f"this Mac has a Metal GPU but llama-cpp-python was built for the CPU only: {METAL_REINSTALL}"
    return None


def hint_once(key: str) -> bool:
    """True the first time a hint is asked for on this machine (a marker in the cache dir)."""
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.core.fsutil import atomic_write_text
    from starchat_cli.core.paths import get_paths

    marker = get_paths().cache_dir / "hints" / key
    if marker.exists():
        return False
    try:
        atomic_write_text(marker, "shown\n")
    except (OSError, StarchatError):  # an unwritable cache: the hint shows again, nothing fails
        pass
    return True
