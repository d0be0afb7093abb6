"""Quantize a GGUF file with llama.cpp's own quantizer (through llama-cpp-python).

The output goes to a temp file beside the target and is renamed only on success; the
input is never overwritten. Progress comes from the quantizer's per-tensor log lines
(``[  12/ 291] blk.1.attn_q.weight ...``), read through llama.cpp's log callback.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from converters.errors import ConversionError, InputFileError, OutOfSpaceError
from converters.outfile import PendingOutput, check_target

# Types llama.cpp's quantizer refuses without an importance matrix ("this quantization
# requires an imatrix"), which starchat does not compute.
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S")
# Not offered: llama.cpp's "guessed" marker.
_SKIP = ("GUESSED",)

ProgressFn = Callable[[int, int, str], None]  # (tensors done, tensors total, current tensor)


def quant_types() -> dict[str, int]:
    """Every file type llama.cpp's quantizer offers, by name (``Q4_K_M`` -> ftype id)."""
    import llama_cpp

    types: dict[str, int] = {}
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            name = attr.removeprefix("LLAMA_FTYPE_MOSTLY_")
        elif attr == "LLAMA_FTYPE_ALL_F32":
            name = "F32"
        else:
            continue
        if name not in _SKIP:
            types[name] = int(getattr(llama_cpp, attr))
    return dict(sorted(types.items(), key=lambda kv: kv[1]))


def normalize_type(qtype: str) -> str:
    return qtype.strip().upper().replace("-", "_")


def check_type(qtype: str) -> tuple[str, int]:
    types = quant_types()
    name = normalize_type(qtype)
    if name not in types:
        raise ConversionError(f"unknown quantization type {qtype!r}: choose one of {', '.join(types)}")
    if name in NEEDS_IMATRIX:
        raise ConversionError(
            f"{name} needs an importance matrix, which `starchat quantize` does not compute: "
            "use Q2_K or a larger type, or llama.cpp's llama-imatrix + llama-quantize"
        )
    return name, types[name]


def default_output(in_path: Path, qtype: str) -> Path:
    stem = re.sub(r"[-.](f32|f16|bf16|F32|F16|BF16)$", "", in_path.stem)
    return in_path.with_name(f"{stem}-{qtype}.gguf")


@dataclass
class QuantizeResult:
    path: Path
    qtype: str
    in_bytes: int
    out_bytes: int
    seconds: float


_PROGRESS_RE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]\s+(\S+)")
_lock = threading.Lock()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def read_source(path: Path) -> tuple[str, int]:
    """A GGUF's weight type from ``general.file_type`` (``F16``, ``Q4_K_M``, ...) and its tensor count."""
    import gguf

    if not path.is_file():
        raise InputFileError(f"{path}: no such file", missing=True)
    try:
        reader = gguf.GGUFReader(str(path), "r")
        field = reader.get_field("general.file_type")
        value = int(field.parts[field.data[0]][0]) if field is not None else None
        n_tensors = len(reader.tensors)
    except (ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        raise InputFileError(f"{path} is not a readable GGUF file ({exc})") from None
    if value is None:
        return "unknown", n_tensors
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return f"type {value}", n_tensors
    return name.removeprefix("MOSTLY_").removeprefix("ALL_"), n_tensors


def quantize(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None,
    qtype: str,
    *,
    progress: ProgressFn | None = None,
    threads: int = 0,
    allow_requantize: bool = False,
    overwrite: bool = False,
) -> QuantizeResult:
    """Quantize ``in_path`` to ``qtype`` (a name from :func:`quant_types`), atomically."""
    started = time.perf_counter()
    src = Path(in_path).expanduser()
    current, n_tensors = read_source(src)
    size = src.stat().st_size
    name, ftype = check_type(qtype)
    out = Path(out_path).expanduser() if out_path is not None else default_output(src, name)
    if _same_file(src, out) or os.path.realpath(src) == os.path.realpath(out):
        raise ConversionError(f"refusing to overwrite the input {src}: pass another -o")
    check_target(out)
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} exists already: pass --force to replace it, or another -o")
    if current not in ("F32", "F16", "BF16") and not allow_requantize:
        raise ConversionError(
            f"{src} is already quantized ({current}); quantizing again loses quality: start from the "
            "F16/BF16/F32 file, or pass --allow-requantize"
        )
    pending = PendingOutput(out)  # an unwritable folder fails here, not as "not enough disk space"
    try:
        import shutil

        free = shutil.disk_usage(out.parent).free
    except OSError:
        free = None
    if free is not None and free < size // 2:
        pending.discard()
        # Every type is at least ~2x smaller than F32 and most far smaller than F16; this is a rough floor.
        raise OutOfSpaceError(
            f"not enough disk space in {out.parent} ({free / 1e9:.2f} GB free): free some space or use -o"
        )

    import llama_cpp

    tmp = pending.path
    log: deque[str] = deque(maxlen=40)

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace")
        if line.strip():
            log.append(line.strip())
        if progress is not None:
            m = _PROGRESS_RE.search(line)
            if m:
                try:
                    progress(int(m.group(1)), int(m.group(2)) or n_tensors, m.group(3))
                except Exception:
                    pass  # a progress display must never break the quantizer
        if os.environ.get("STARCHAT_LLAMA_LOG"):
            try:
                os.write(2, text)
            except OSError:
                pass

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = max(0, int(threads))
    params.allow_requantize = allow_requantize
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["rc"] = llama_cpp.llama_model_quantize(
                os.fsencode(src), os.fsencode(tmp), ctypes.byref(params)
            )
        except BaseException as exc:  # reported in the calling thread
            result["exc"] = exc

    with _lock:
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
        try:
            if progress is not None:
                progress(0, n_tensors, "")
            # The quantizer runs in a thread so Ctrl-C reaches Python; the C call cannot be
            # stopped, so on Ctrl-C we wait for it to finish and then remove the temp file.
            worker = threading.Thread(target=run, name="starchat-quantize", daemon=True)
            worker.start()
            try:
                while worker.is_alive():
                    worker.join(0.2)
            except KeyboardInterrupt:
                worker.join()
                pending.discard()
                raise
        finally:
            _restore_log()
    try:
        if "exc" in result:
            raise result["exc"]  # type: ignore[misc]
        if result.get("rc") != 0:
            detail = next(
                (ln for ln in reversed(log) if any(w in ln.lower() for w in ("error", "failed", "invalid"))),
                log[-1] if log else "no detail",
            )
            raise ConversionError(f"llama.cpp could not quantize {src} to {name}: {detail}")
        pending.commit()
    except BaseException:
        pending.discard()
        raise
    if progress is not None:
        progress(n_tensors, n_tensors, "")
    return QuantizeResult(out, name, size, out.stat().st_size, time.perf_counter() - started)


def _restore_log() -> None:
    """Give llama.cpp's log back to llama-cpp-python's own logger (a starchat engine installs
    its capture again at each load)."""
    import llama_cpp

    logger_mod = sys.modules.get("llama_cpp._logger")
    callback = getattr(logger_mod, "llama_log_callback", None)
    if callback is not None:
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
