"""GPU offload planning (pure, table-driven), GPU/build detection, OOM fallbacks, doctor.

No GPU exists on the machines this runs on: detection is exercised with a fake
`nvidia-smi` on PATH, the load fallbacks with a stand-in for llama_cpp.Llama.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starchat_cli.cli.app import app
from starchat_cli.engine.llamacpp.hardware import (
    CUDA_REINSTALL,
    GPU,
    METAL_REINSTALL,
    BuildInfo,
    build_mismatch,
    detect_gpus,
    hint_once,
    metal_working_set,
    parse_nvidia_smi,
    parse_system_info,
)
from starchat_cli.engine.llamacpp.offload import (
    GIB,
    MIB,
    ModelShape,
    compute_margin,
    fewer_layers,
    kv_cache_bytes,
    plan_offload,
)

GB = 10**9

# StarCoder2-15B / StarChat2 at Q4_K_M (9.86 GB file): 40 blocks, n_embd 6144, 48 heads,
# 4 KV heads of 128, vocab 49152. Blocks ~236 MB each, output (Q6_K) ~248 MB, token
# embedding stays on the CPU.
SC2_15B = ModelShape.uniform(
    40, 236_000_000, 248_000_000, n_embd=6144, n_vocab=49152, n_kv_heads=4, head_dim=128, context_length=16384
)
# KV per block at n_ctx 4096: 4096 x (512 + 512) x 2 bytes = 8,388,608 bytes.
# Margin: 256 MiB + 512 x (49152 + 4 x 6144) x 4 = 268,435,456 + 150,994,944 = 419,430,400.
# Everything at 4096: 40 x 236,000,000 + 40 x 8,388,608 + 248,000,000 + 419,430,400 = 10,442,974,720.


def test_arithmetic_behind_the_table():
    assert kv_cache_bytes(SC2_15B, 4096, 1) == 8_388_608
    assert kv_cache_bytes(SC2_15B, 8192) == 40 * 2 * 8_388_608  # 0.67 GB
    assert compute_margin(SC2_15B) == 419_430_400
    assert plan_offload(SC2_15B, 4096, 10**15).needed_bytes == 10_442_974_720


@pytest.mark.parametrize(
    "card, free, n_ctx, layers, output",
    [
        # (free - margin) // (block + its KV) when not everything fits:
        ("8 GB card", 7_600_000_000, 4096, 29, False),  # 7,180,569,600 // 244,388,608 = 29
        ("12 GB card", 11_400_000_000, 4096, 40, True),  # 10.44 GB needed: all of it fits
        ("12 GB card, 16k ctx", 11_400_000_000, 16384, 40, False),  # +1.0 GB of KV pushes the output out
        ("16 GB card", 15_500_000_000, 4096, 40, True),
        ("16 GB card, 16k ctx", 15_500_000_000, 16384, 40, True),
        ("24 GB card", 23_500_000_000, 16384, 40, True),
        ("80 GB card", 79_000_000_000, 16384, 40, True),
        ("2 GB card", 1_900_000_000, 4096, 6, False),  # 1,480,569,600 // 244,388,608 = 6
        ("margin alone does not fit", 300_000_000, 4096, 0, False),
    ],
)
def test_plan_for_15b_q4_k_m(card, free, n_ctx, layers, output):
    plan = plan_offload(SC2_15B, n_ctx, free)
    assert (plan.layers, plan.output) == (layers, output), card
    assert plan.needed_bytes <= free
    assert plan.n_gpu_layers == layers + (1 if output else 0)


def test_12_gb_card_at_16k_keeps_the_output_on_the_cpu_because_it_does_not_fit():
    # All 40 blocks + KV at 16384 + margin = 9,440,000,000 + 1,342,177,280 + 419,430,400 = 11,201,607,680
    # <= 11.4 GB, but + the 248 MB output = 11,449,607,680 > 11.4 GB.
    plan = plan_offload(SC2_15B, 16384, 11_400_000_000)
    assert plan.needed_bytes == 11_201_607_680


@pytest.mark.parametrize("ram_gib, layers", [(16, 40), (36, 40)])
def test_metal_plans_against_the_working_set(ram_gib, layers):
    budget = metal_working_set(ram_gib * GIB)
    plan = plan_offload(SC2_15B, 4096, budget, device="Metal")
    assert plan.layers == layers
    assert plan.needed_bytes <= budget


def test_metal_16_gib_with_a_bigger_quant_offloads_part():
    q8 = ModelShape.uniform(  # the same model at Q8_0 (~16.9 GB)
        40, 410_000_000, 522_000_000, n_embd=6144, n_vocab=49152, n_kv_heads=4, head_dim=128
    )
    budget = metal_working_set(16 * GIB)  # 10.67 GiB = 11,453,246,122 bytes
    assert budget == 11_453_246_122
    # (11,453,246,122 - 419,430,400) // (410,000,000 + 8,388,608) = 26
    assert plan_offload(q8, 4096, budget, device="Metal").layers == 26
    assert plan_offload(q8, 4096, metal_working_set(36 * GIB), device="Metal").full
    # The Q4_K_M model at its full 16k context just fits 16 GiB: 11,449,607,680 bytes needed.
    assert plan_offload(SC2_15B, 16384, budget).full


def test_metal_working_set_fraction():
    assert metal_working_set(36 * GIB) == 24 * GIB
    assert metal_working_set(64 * GIB) == 48 * GIB


def test_plans_are_monotonic():
    frees = [GB * n // 2 for n in range(1, 60)]
    layers = [plan_offload(SC2_15B, 8192, f).n_gpu_layers for f in frees]
    assert layers == sorted(layers) and layers[0] == 0 and layers[-1] == 41
    by_ctx = [plan_offload(SC2_15B, c, 9 * GB).layers for c in (512, 2048, 4096, 8192, 16384)]
    assert by_ctx == sorted(by_ctx, reverse=True) and by_ctx[0] > by_ctx[-1]


def test_plan_message():
    text = plan_offload(SC2_15B, 8192, 8 * GIB, device="RTX 4060").describe()
    assert text.startswith("offloading ") and "/40 layers to the RTX 4060: " in text
    assert "of 8.0 GiB free; KV cache 0.6 GiB at n_ctx 8192" in text


def test_tiny_demo_model_from_its_gguf(demo_gguf):
    from starchat_cli.models.gguf_info import read_gguf_info

    shape = ModelShape.from_gguf(read_gguf_info(demo_gguf))
    assert shape.n_layers == 30 and shape.n_embd == 576 and shape.n_vocab == 49152
    assert shape.n_embd_k == 3 * 64  # 3 KV heads of 64
    assert sum(shape.layer_bytes) + shape.output_bytes < demo_gguf.stat().st_size * 1.4
    assert plan_offload(shape, 4096, 1 * GIB).full
    assert plan_offload(shape, 4096, 200 * MIB).layers == 0


def test_fewer_layers_after_out_of_memory():
    seq, n = [], -1
    while n != 0:
        n = fewer_layers(n, 40)
        seq.append(n)
    assert seq[0] == 30 and seq[-1] == 0 and seq == sorted(seq, reverse=True)


# -- detection --------------------------------------------------------------------------------

CPU_INFO = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 0 | OPENMP = 1 | "
CUDA_INFO = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : AVX2 = 1 | AVX512 = 1 | "
METAL_INFO = (
    "Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | ACCELERATE = 1 | BLAS : ACCELERATE = 1 |"
)


def test_parse_system_info():
    cpu = parse_system_info(CPU_INFO)
    assert cpu == {"CPU": {"SSE3": "1", "AVX": "1", "AVX2": "1", "AVX512": "0", "OPENMP": "1"}}
    cuda = BuildInfo("0.3", True, parse_system_info(CUDA_INFO))
    assert cuda.cuda and not cuda.metal and cuda.cpu_features() == ["AVX2", "AVX512"]
    metal = BuildInfo("0.3", True, parse_system_info(METAL_INFO))
    assert metal.metal and metal.blas and not metal.cuda


def test_real_build_info_is_parsed():
    from starchat_cli.engine.llamacpp.hardware import build_info

    info = build_info()
    assert "CPU" in info.backends
    assert info.cpu_features()  # this build reports at least one CPU feature


def test_parse_nvidia_smi_output():
    gpus = parse_nvidia_smi(
        "0, NVIDIA GeForce RTX 4090, 24564, 23012, 550.54\n1, Tesla T4, [N/A], [N/A], 550.54\n"
    )
    assert gpus == [
        GPU(0, "NVIDIA GeForce RTX 4090", 24564 * MIB, 23012 * MIB, "cuda", "550.54", "nvidia-smi")
    ]


def fake_nvidia_smi(tmp_path: Path, body: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_detect_gpus_with_a_fake_nvidia_smi_and_no_nvml(tmp_path, monkeypatch):
    from importlib.util import find_spec

    assert find_spec("pynvml") is None  # NVML absent: the nvidia-smi path is the one tested
    bindir = fake_nvidia_smi(
        tmp_path,
        'case "$*" in *--query-gpu=index,name,memory.total,memory.free,driver_version*) '
        'echo "0, NVIDIA RTX A4000, 16376, 15800, 535.1";; *) exit 3;; esac\n',
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    gpus = detect_gpus()
    assert [(g.name, g.free_bytes, g.source) for g in gpus] == [
        ("NVIDIA RTX A4000", 15800 * MIB, "nvidia-smi")
    ]


def test_broken_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    bindir = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert detect_gpus() == []


def test_no_probes_at_all(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    assert detect_gpus() == []


def test_build_mismatch_hints():
    cpu_build = BuildInfo("0.3", False, parse_system_info(CPU_INFO))
    nvidia = [GPU(0, "RTX", 8 * GIB, 7 * GIB, "cuda")]
    apple = [GPU(0, "Apple", 10 * GIB, 10 * GIB, "metal")]
    assert CUDA_REINSTALL in build_mismatch(cpu_build, nvidia)
    assert METAL_REINSTALL in build_mismatch(cpu_build, apple)
    assert build_mismatch(cpu_build, []) is None
    assert build_mismatch(BuildInfo("0.3", True, {}), nvidia) is None


def test_hint_is_given_once():
    assert hint_once("test-hint") is True
    assert hint_once("test-hint") is False
    assert hint_once("other-hint") is True


def build_offloads() -> bool:
    """Whether this llama-cpp-python build can offload to a GPU, as llama.cpp itself says."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


# -- choosing and loading -------------------------------------------------------------------


def test_choose_gpu_layers_settings(demo_gguf):
    from starchat_cli.engine.llamacpp.gpu import choose_gpu_layers
    from starchat_cli.models.gguf_info import read_gguf_info

    info = read_gguf_info(demo_gguf)
    assert choose_gpu_layers("off", info, 4096).n_gpu_layers == 0
    assert choose_gpu_layers(12, info, 4096).n_gpu_layers == 12
    auto = choose_gpu_layers("auto", info, 4096)
    if build_offloads():
        assert auto.n_gpu_layers != 0 and "no GPU offload" not in auto.reason  # a GPU build
    else:
        assert auto.n_gpu_layers == 0 and "no GPU offload" in auto.reason  # a CPU-only build


def test_cpu_build_on_a_gpu_machine_says_how_to_reinstall_once(demo_gguf, tmp_path, monkeypatch):
    import llama_cpp

    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions

    monkeypatch.setattr(
        llama_cpp, "llama_supports_gpu_offload", lambda: False
    )  # a CPU-only build, also on CUDA
    bindir = fake_nvidia_smi(tmp_path, 'echo "0, NVIDIA L4, 23034, 22000, 550.1"\n')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    first = LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=256))
    first.load()
    assert first.warnings == [
        f"this machine has an NVIDIA GPU but llama-cpp-python was built for the CPU only: {CUDA_REINSTALL}"
    ]
    second = LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=256))
    second.load()
    assert second.warnings == []


class FakeLlama:
    """Stands in for llama_cpp.Llama: fails like llama.cpp does when memory runs out."""

    def __init__(self, max_gpu_layers: int, flash_ok: bool = True) -> None:
        self.max_gpu_layers = max_gpu_layers
        self.flash_ok = flash_ok
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(dict(kwargs))
        if kwargs["flash_attn"] and not self.flash_ok:
            raise ValueError("Failed to create llama_context")
        n = kwargs["n_gpu_layers"]
        if n < 0 or n > self.max_gpu_layers:
            raise ValueError(f"Failed to load model from file: {kwargs['model_path']}")
        return "model"


def backend_for_fallbacks(monkeypatch, demo_gguf):
    from starchat_cli.engine.llamacpp import backend as engine

    monkeypatch.setattr(engine, "gpu_offload_supported", lambda: True)
    return engine.LlamaCppBackend(demo_gguf, engine.LoadOptions())


def test_out_of_memory_load_retries_with_fewer_layers(monkeypatch, demo_gguf):
    backend = backend_for_fallbacks(monkeypatch, demo_gguf)
    fake = FakeLlama(max_gpu_layers=20)
    kwargs = {"model_path": "m.gguf", "n_gpu_layers": -1, "flash_attn": True, "n_ctx": 4096}
    assert backend._load_with_fallbacks(fake, kwargs, 40) == "model"
    tried = [c["n_gpu_layers"] for c in fake.calls]
    assert tried == [-1, 30, 22, 16]
    assert backend.gpu.n_gpu_layers == 16
    assert len(backend.warnings) == 3 and "retried with 30" in backend.warnings[0]


def test_flash_attention_falls_back_before_layers_do(monkeypatch, demo_gguf):
    backend = backend_for_fallbacks(monkeypatch, demo_gguf)
    fake = FakeLlama(max_gpu_layers=99, flash_ok=False)
    kwargs = {"model_path": "m.gguf", "n_gpu_layers": 10, "flash_attn": True, "n_ctx": 4096}
    assert backend._load_with_fallbacks(fake, kwargs, 40) == "model"
    assert [(c["flash_attn"], c["n_gpu_layers"]) for c in fake.calls] == [(True, 10), (False, 10)]
    assert backend.warnings == []


def test_load_that_fails_even_on_the_cpu_is_one_error(monkeypatch, demo_gguf):
    from starchat_cli.core.errors import ModelLoadError

    backend = backend_for_fallbacks(monkeypatch, demo_gguf)
    fake = FakeLlama(max_gpu_layers=-5)  # fails at every layer count, even 0
    kwargs = {"model_path": "m.gguf", "n_gpu_layers": 8, "flash_attn": False, "n_ctx": 4096}
    with pytest.raises(ModelLoadError, match="cannot load"):
        backend._load_with_fallbacks(fake, kwargs, 40)
    assert fake.calls[-1]["n_gpu_layers"] == 0


# -- doctor ------------------------------------------------------------------------------------


def test_doctor_on_this_machine(demo_gguf):
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    # What this build and machine report (llama_cpp's own answer), so it holds on a CUDA build too.
    assert ("GPU offload: yes" if build_offloads() else "GPU offload: no (CPU-only build)") in out
    assert ("GPU 0: " if detect_gpus() else "GPUs: none found") in out
    assert "model demo: llama, Q4_1" in out and "all layers on a GPU would need" in out
    assert "no problems found" in out


def test_doctor_json_and_load_check(demo_gguf):
    res = CliRunner().invoke(app, ["doctor", "--json", "--load", "--ctx", "1024"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["llama_cpp"]["gpu_offload"] is build_offloads()
    assert data["threads"]["default"] >= 1
    assert data["paths"]["models"]["free_bytes"] > 0
    demo = next(m for m in data["models"] if m["name"] == "demo")
    assert demo["loaded"] is True and demo["n_ctx"] == 1024
    if not build_offloads():
        assert demo["gpu_layers"] == 0
    assert data["problems"] == []


def test_doctor_reports_problems_with_exit_1(tmp_path, monkeypatch):
    from .helpers.models import write_tiny_gguf

    model = write_tiny_gguf(tmp_path / "m.gguf")
    assert CliRunner().invoke(app, ["add", str(model), "--name", "broken"]).exit_code == 0
    model.write_bytes(b"GGUF" + b"\x00" * 10)  # now truncated
    import llama_cpp

    monkeypatch.setattr(
        llama_cpp, "llama_supports_gpu_offload", lambda: False
    )  # a CPU-only build, also on CUDA
    bindir = fake_nvidia_smi(tmp_path, 'echo "0, NVIDIA L4, 23034, 22000, 550.1"\n')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 1
    assert "model broken: PROBLEM:" in res.stdout
    assert "GPU 0: NVIDIA L4: 21.5 GiB free of 22.5 GiB (via nvidia-smi)" in res.stdout
    assert CUDA_REINSTALL in res.stdout
