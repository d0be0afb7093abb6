"""Choosing the GPU offload for a model at load: off, a number of layers, or planned from free memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GpuChoice:
    n_gpu_layers: int  # llama.cpp's value: -1 all, 0 none, N blocks (+1 = output too)
    plan: object | None = None  # offload.OffloadPlan when planned from free memory
    reason: str = ""
    hint: str | None = None  # e.g. "this machine has an NVIDIA GPU but the build is CPU-only: ..."


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU at all."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def choose_gpu_layers(setting: str | int, info, n_ctx: int) -> GpuChoice:  # info: GGUFInfo
    """``off``/0: CPU only; N: N layers; ``auto``: plan from the GPUs' free memory.

    ``auto`` with a CPU-only build is 0; with an offload build but no way to read free
    memory (no NVML, no nvidia-smi: ROCm, Vulkan, ...) it is every layer, and an
    out-of-memory load falls back to fewer (see ``LlamaCppBackend.load``).
    """
    if setting in ("off", 0, "0"):
        return GpuChoice(0, None, "GPU off")
    if setting != "auto":
        return GpuChoice(int(setting), None, f"{setting} layers requested")
    from starchat_cli.engine.llamacpp.hardware import build_info, build_mismatch, detect_gpus
    from starchat_cli.engine.llamacpp.offload import ModelShape, plan_offload

    build = build_info()
    gpus = detect_gpus()
    if not build.gpu_offload:
        return GpuChoice(0, None, "this llama.cpp build has no GPU offload", build_mismatch(build, gpus))
    if not gpus:
        return GpuChoice(-1, None, "offloading every layer (free GPU memory unknown)")
    plan = plan_offload(
        ModelShape.from_gguf(info),
        n_ctx,
        sum(g.free_bytes for g in gpus),
        device=gpus[0].name if len(gpus) == 1 else f"{len(gpus)} GPUs",
        n_devices=len(gpus),
    )
    return GpuChoice(plan.n_gpu_layers, plan, plan.describe())


__all__ = ["GpuChoice", "choose_gpu_layers", "gpu_offload_supported"]
