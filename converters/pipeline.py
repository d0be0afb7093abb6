"""The tensor pipeline of a conversion: each checkpoint tensor read in row chunks from the
mmap'd files, encoded to its GGUF type (F32/F16/BF16/Q8_0) on a small thread pool with
reused buffers, and handed back in order for the writer."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np

from .safetensors_io import TensorEntry, bf16_from_float32, f16_from_bf16, to_float32

# GGML tensor types
F32, F16, Q8_0, BF16 = 0, 1, 8, 30
Q8_BLOCK, Q8_BYTES = 32, 34

CHUNK_ELEMENTS = 2 * 1024 * 1024  # rows are converted in chunks of about this many values
MAX_WORKERS = 4  # threads converting chunks (numpy releases the GIL) while the main thread writes


@dataclass
class Tensor:
    hf_name: str
    name: str
    entry: TensorEntry
    reader: Any
    ggml_type: int
    out_shape: tuple[int, ...]
    out_bytes: int


def out_type(name: str, shape: tuple[int, ...], outtype: str) -> int:
    """1-D tensors (norms, biases) and position_embd stay F32; the rest take the output type."""
    if outtype == "f32" or len(shape) < 2 or name.startswith("position_embd."):
        return F32
    if outtype == "f16":
        return F16
    if outtype == "bf16":
        return BF16
    if shape[-1] % Q8_BLOCK == 0:
        return Q8_0
    return F16


def n_bytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    n = int(np.prod(shape)) if shape else 1
    if ggml_type == F32:
        return 4 * n
    if ggml_type in (F16, BF16):
        return 2 * n
    return n // Q8_BLOCK * Q8_BYTES


def _encode(chunk32: np.ndarray, ggml_type: int) -> np.ndarray:
    if ggml_type == F32:
        return np.ascontiguousarray(chunk32, dtype=np.float32)
    if ggml_type == F16:
        return chunk32.astype(np.float16)
    if ggml_type == BF16:
        return bf16_from_float32(chunk32)
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import quantize

    return quantize(np.ascontiguousarray(chunk32, dtype=np.float32), GGMLQuantizationType.Q8_0)


class Ring:
    """Reusable chunk buffers, one set per job that can be alive at once.

    Fresh multi-megabyte arrays for every chunk cost a page fault per 4 KB (glibc hands
    large blocks back to the kernel); reusing a few sets keeps the conversion in user
    time. A set is reused only after its chunk has been written (see :func:`pipelined`).
    """

    def __init__(self, size: int) -> None:
        self.sets: list[dict[str, np.ndarray]] = [{} for _ in range(size)]
        self.turn = 0

    def next(self) -> dict[str, np.ndarray]:
        slot = self.sets[self.turn % len(self.sets)]
        self.turn += 1
        return slot


def _buffer(slot: dict[str, np.ndarray], key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    n = int(np.prod(shape))
    arr = slot.get(key)
    if arr is None or arr.size < n or arr.dtype != dtype:
        arr = slot[key] = np.empty(max(n, CHUNK_ELEMENTS), dtype)
    return arr[:n].reshape(shape)


def _job(piece: np.ndarray, dtype: str, ggml_type: int, slot: dict[str, np.ndarray]) -> np.ndarray:
    if dtype == "BF16" and ggml_type == F16:  # the common case: bf16 checkpoints to f16
        return f16_from_bf16(piece, _buffer(slot, "out16", piece.shape, np.uint16), slot)
    if dtype == "F32" and ggml_type == F16:
        out = _buffer(slot, "f16", piece.shape, np.float16)
        np.copyto(out, piece, casting="same_kind")
        return out
    if dtype == "BF16" and ggml_type == F32:
        out = _buffer(slot, "u32", piece.shape, np.uint32)
        np.left_shift(piece, 16, out=out, dtype=np.uint32)
        return out.view(np.float32)
    return _encode(to_float32(piece, dtype), ggml_type)


def chunks(
    t: Tensor, transform: Callable[[np.ndarray], np.ndarray] | None, ring: Ring
) -> Iterator[tuple[Callable[[], np.ndarray], int]]:
    """Jobs that each encode one row chunk of a tensor, with the checkpoint bytes each consumes."""
    src = t.reader.array(t.hf_name)
    dtype = t.entry.dtype
    ggml_type = t.ggml_type
    if transform is not None:
        whole = np.array(to_float32(src, dtype), dtype=np.float32)
        yield (lambda: _encode(transform(whole), ggml_type)), t.entry.n_bytes
        return
    raw_ok = (dtype == "F32" and ggml_type == F32) or (dtype == "F16" and ggml_type == F16)
    raw_ok = raw_ok or (dtype == "BF16" and ggml_type == BF16)
    rows = src.shape[0] if src.ndim >= 2 else 1
    per_row = max(1, src.size // max(rows, 1))
    step = max(1, CHUNK_ELEMENTS // per_row) if src.ndim >= 2 else rows
    item = t.entry.n_bytes // max(src.size, 1)
    reader, name = t.reader, t.hf_name
    for r0 in range(0, rows, step):
        piece = src[r0 : r0 + step] if src.ndim >= 2 else src
        reader.prefetch(name, r0 * per_row * item, (r0 + step) * per_row * item)
        if raw_ok:
            yield partial(np.ascontiguousarray, piece), piece.size * item
        else:
            slot = ring.next()
            yield partial(_job, piece, dtype, ggml_type, slot), piece.size * item


def pipelined(
    jobs: Iterator[tuple[Callable[[], np.ndarray], int]], pool: Any, depth: int
) -> Iterator[tuple[np.ndarray, int]]:
    """Run the jobs on the pool, at most ``depth`` ahead, yielding results in order."""
    if pool is None:
        for job, consumed in jobs:
            yield job(), consumed
        return
    pending: deque[tuple[Any, int]] = deque()
    for job, consumed in jobs:
        pending.append((pool.submit(job), consumed))
        if len(pending) >= depth:
            future, done = pending.popleft()
            yield future.result(), done
    while pending:
        future, done = pending.popleft()
        yield future.result(), done
