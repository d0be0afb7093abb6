"""The CPU's extra weight-buffer types in llama.cpp (AMX, CPU_REPACK, ...): list them, drop one.

    cpu_extra_buffer_types()        # ['AMX', 'CPU_REPACK'] on an AMX build for x86
    drop_cpu_buffer_type("AMX")     # later loads in this process use CPU_REPACK where AMX was
    with without_extra_buffer_types():
        llm = llama_cpp.Llama(...)  # loaded with use_extra_bufts = false (llama.cpp's --no-repack)

Written against llama-cpp-python 0.3.36 (ggml 0.25). When a model loads, llama.cpp asks the CPU
backend for its extra buffer types through ``ggml_backend_dev_get_extra_bufts`` and offers each
weight to them in order; the answer is a null-terminated array that ggml keeps for the life of
the process. Removing one entry from that array is how a single buffer type is left out while
llama.cpp's own choice is kept for the others: llama.cpp has no parameter for it (only all or
none). Every step checks what it finds (symbols present, a plausible array, the names) and
reports False rather than guess; the caller then loads with no extra buffer types at all.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

GGML_BACKEND_DEVICE_TYPE_CPU = 0
MAX_BUFTS = 16  # far more than any build registers; a longer list is not what we expect
_LOCK = threading.Lock()
_libs: tuple[ctypes.CDLL, ctypes.CDLL] | None = None


def _ggml() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libggml (the registry) and libggml-base (buffer types), as llama-cpp-python loaded them."""
    global _libs
    if _libs is None:
        import llama_cpp

        lib = Path(llama_cpp.__file__).parent / "lib"
        ggml = ctypes.CDLL(str(lib / "libggml.so"))
        base = ctypes.CDLL(str(lib / "libggml-base.so"))
        ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
        base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
        base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
        base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
        base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        base.ggml_backend_buft_name.restype = ctypes.c_char_p
        base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
        _libs = (ggml, base)
    return _libs


def _extra_array():  # -> (ctypes array of void*, its length, libggml-base) or None
    try:
        ggml, base = _ggml()
    except (OSError, AttributeError):  # another layout of the package, or symbols missing
        return None
    dev = ggml.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
    if not dev:
        return None
    reg = base.ggml_backend_dev_backend_reg(dev)
    fn = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts") if reg else None
    if not fn:
        return None
    get = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(fn)
    arr = get(dev)
    if not arr:
        return None
    n = 0
    while n < MAX_BUFTS and arr[n]:
        n += 1
    if n == MAX_BUFTS:
        return None
    return arr, n, base


def cpu_extra_buffer_types() -> list[str] | None:
    """The names llama.cpp will offer weights to, in order; None when they cannot be read."""
    with _LOCK:
        found = _extra_array()
        if found is None:
            return None
        arr, n, base = found
        return [(base.ggml_backend_buft_name(arr[i]) or b"?").decode("utf-8", "replace") for i in range(n)]


def drop_cpu_buffer_type(name: str) -> bool:
    """Leave ``name`` out of the CPU's extra buffer types for every later load in this process.

    True when it is not offered any more (dropped now or before, or never there); False when the
    list could not be read or changed safely."""
    with _LOCK:
        found = _extra_array()
        if found is None:
            return False
        arr, n, base = found
        names = [base.ggml_backend_buft_name(arr[i]) for i in range(n)]
        if any(not isinstance(x, bytes) for x in names):
            return False
        keep = [arr[i] for i in range(n) if names[i] != name.encode()]
        for i in range(n):  # in place: the kept ones close up, the tail is null-terminated
            arr[i] = keep[i] if i < len(keep) else None
        return True


_patch_lock = threading.Lock()


@contextmanager
def without_extra_buffer_types() -> Iterator[None]:
    """Models created inside load with ``use_extra_bufts = false`` (no AMX, no CPU repack).

    llama-cpp-python's ``Llama`` takes no such argument, and fills its model parameters from
    ``llama_model_default_params()``: that function is wrapped for the duration of the load.
    """
    import llama_cpp.llama_cpp as lc

    original = lc.llama_model_default_params

    def defaults_without_extras():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    with _patch_lock:
        lc.llama_model_default_params = defaults_without_extras
        try:
            yield
        finally:
            lc.llama_model_default_params = original


__all__ = ["cpu_extra_buffer_types", "drop_cpu_buffer_type", "without_extra_buffer_types"]
