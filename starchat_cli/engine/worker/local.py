"""The LocalEngine a spec describes: what a worker serves, and the in-process path (``worker = off``).

engine = local_engine(spec)   # not loaded yet: the model loads on first use
"""

from __future__ import annotations

from pathlib import Path

from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
from starchat_cli.engine.llamacpp.engine import LocalEngine
from starchat_cli.engine.llamacpp.prompt_cache import PromptCache
from starchat_cli.engine.prompting.formats import get_format
from starchat_cli.engine.worker.spec import EngineSpec


def local_engine(spec: EngineSpec) -> LocalEngine:
    """The llama.cpp engine for ``spec``: its format (or the file's own template), stops, prompt cache."""
    cache = PromptCache(Path(spec.cache_dir), spec.cache_bytes) if spec.cache_dir else None
    backend = LlamaCppBackend(
        Path(spec.path),
        LoadOptions(
            n_ctx=spec.n_ctx, n_threads=spec.n_threads, gpu=spec.gpu, amx=spec.amx, flash_attn=spec.flash_attn
        ),
        cache=cache,
        name=spec.name,
    )
    fmt = get_format(spec.format_name) if spec.format_name else None
    forced = None if fmt is not None else spec.forced_format
    return LocalEngine(backend, fmt, spec.system, forced_format=forced, name=spec.name, aliases=spec.aliases)


__all__ = ["local_engine"]
