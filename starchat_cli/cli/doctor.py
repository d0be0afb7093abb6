"""``starchat doctor``: what this machine, this llama.cpp build and the local models can do."""

from __future__ import annotations

import json
from typing import Any

import typer

from starchat_cli.cli.limits import number
from starchat_cli.core import defaults
from starchat_cli.core.units import format_bytes

DOCTOR_HELP = """\
Check the set-up: versions, llama.cpp build features (CUDA, Metal, BLAS, AVX2/AVX512),
GPUs and their free memory, threads, disk space, caches, and each local model with the
GPU offload plan starchat would use for it.

On a CPU with Intel AMX it says whether llama.cpp's AMX kernels work in this build or
crash (models then load without them), as remembered from the probe that the first model
load runs; --load runs that probe now if it never ran.

Exit code 0 when everything checks out, 1 when a problem was found.
"""


def register(app: typer.Typer) -> None:
    app.command("doctor", help=DOCTOR_HELP)(doctor)


def _gib(n: int | None) -> str:
    return "?" if n is None else format_bytes(n, "GiB")


def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ctx: int = typer.Option(
        defaults.CTX,
        "--ctx",
        "-c",
        help="Context size the offload plans are made for.",
        callback=number("doctor_ctx"),
    ),
    load: bool = typer.Option(
        False,
        "--load",
        help="Also load each model with llama.cpp, and probe AMX if needed (slower, thorough).",
    ),
    forget_fallbacks: bool = typer.Option(
        False,
        "--forget-fallbacks",
        help="Forget the safer settings remembered after worker crashes (the next call tries the usual ones).",
    ),
) -> None:
    from starchat_cli.services.doctor import collect

    if forget_fallbacks:
        from starchat_cli.engine.worker.healing import Fallbacks

        n = Fallbacks.default().forget()
        print(f"forgot {n} remembered fallback{'s' if n != 1 else ''}")
        return

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
    amx = d["amx"]
    lines.append(f"  {amx['summary']}")
    if amx["rebuild"]:
        lines.append(f"    {amx['rebuild']}")
    if amx["probed_at"]:
        lines.append(f"    (probed {amx['probed_at']}; delete {amx['probe_file']} to probe again)")
    for fb in d["fallbacks"]:
        lines.append(
            f"  {fb['model']} starts {fb['settings']}: it crashed with the usual settings "
            f"({fb['why']}, {fb['when']}); `starchat doctor --forget-fallbacks` to try them again"
        )
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
