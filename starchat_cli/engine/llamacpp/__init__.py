"""The llama.cpp backend (through llama-cpp-python): the model on first use (backend.py), the
``LocalEngine`` that implements the Engine contract over it (engine.py), the persistent prompt
cache (prompt_cache.py, kv_state.py), GPU offload and hardware (gpu.py, offload.py, hardware.py),
Intel AMX handling (amx.py, amx_probe.py, ggml_bufts.py), llama.cpp's log (log.py), a model
file's own chat template (file_format.py). internals.py alone reads llama-cpp-python's privates."""


def import_library() -> None:
    """Import llama-cpp-python (and so load libllama) now, ahead of the first model: a worker started
    ahead of need (engine/worker/ahead.py) does it while its client resolves its settings."""
    import llama_cpp  # noqa: F401
