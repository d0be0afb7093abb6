"""A fast reader for a GGUF file's header: metadata and tensor table, no tensor data.

``gguf.GGUFReader`` maps and decodes every array (the 49k-entry vocabulary included),
which takes seconds; ``starchat list`` and ``info`` need a few keys, so this module
walks the header with :mod:`struct` and skips large arrays. The tables of GGML types
and file types are checked against the ``gguf`` package by the tests.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from starchat_cli.core.errors import ModelLoadError, ModelNotFoundError

GGUF_MAGIC = b"GGUF"

# GGUF value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9

# GGML tensor types: id -> (name, elements per block, bytes per block).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# general.file_type -> the quantization name people use (llama.cpp's LLAMA_FTYPE_MOSTLY_*).
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

# Arrays longer than this are not decoded, only their length is kept.
_ARRAY_KEEP = 64


@dataclass(frozen=True)
class ArraySummary:
    """A large metadata array that was skipped: its element type and length."""

    item_type: int
    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.ggml_type, (f"type{self.ggml_type}", 0, 0))[0]

    @property
    def n_bytes(self) -> int | None:
        entry = GGML_TYPES.get(self.ggml_type)
        if entry is None:
            return None
        _, block, size = entry
        return self.n_elements // block * size


@dataclass
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_key(self, suffix: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    @property
    def context_length(self) -> int | None:
        value = self.arch_key("context_length")
        return int(value) if value is not None else None

    @property
    def block_count(self) -> int | None:
        value = self.arch_key("block_count")
        return int(value) if value is not None else None

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def quant(self) -> str:
        ft = self.metadata.get("general.file_type")
        if ft is not None:
            return FILE_TYPES.get(int(ft), f"type{ft}")
        # No file type recorded: name the most common tensor type among matrices.
        counts: dict[str, int] = {}
        for t in self.tensors:
            if len(t.shape) >= 2:
                counts[t.type_name] = counts.get(t.type_name, 0) + t.n_elements
        return max(counts, key=counts.__getitem__) if counts else "unknown"

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    def data_end(self) -> int | None:
        """Where the last tensor's data ends, or None when a tensor type is unknown."""
        end = self.data_offset
        for t in self.tensors:
            size = t.n_bytes
            if size is None:
                return None
            end = max(end, self.data_offset + t.offset + size)
        return end


class _Reader:
    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.h = handle
        self.path = path

    def read(self, n: int) -> bytes:
        data = self.h.read(n)
        if len(data) != n:
            raise ModelLoadError(f"{self.path}: truncated GGUF header: re-download or re-convert the file")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 30:
            raise ModelLoadError(f"{self.path}: corrupt GGUF header (string of {n} bytes)")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.unpack("<I")
            length = self.unpack("<Q")
            if length > _ARRAY_KEEP:
                self.skip_array(item_type, length)
                return ArraySummary(item_type, length)
            return [self.value(item_type) for _ in range(length)]
        raise ModelLoadError(f"{self.path}: corrupt GGUF header (unknown value type {vtype})")

    def skip_array(self, item_type: int, length: int) -> None:
        if item_type in _SCALARS:
            self.h.seek(struct.calcsize(_SCALARS[item_type]) * length, os.SEEK_CUR)
        elif item_type == _STRING:
            for _ in range(length):
                n = self.unpack("<Q")
                self.h.seek(n, os.SEEK_CUR)
        else:
            for _ in range(length):
                self.value(item_type)


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse the header of a GGUF file; raises one-line errors for missing or corrupt files."""
    p = Path(path)
    try:
        handle = p.open("rb")
    except FileNotFoundError:
        raise ModelNotFoundError(f"model file not found: {p}") from None
    except IsADirectoryError:
        raise ModelNotFoundError(f"{p} is a folder, not a .gguf file") from None
    except PermissionError:
        raise ModelLoadError(f"cannot read {p}: permission denied") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        r = _Reader(handle, p)
        magic = handle.read(4)
        if magic != GGUF_MAGIC:
            raise ModelLoadError(
                f"{p} is not a GGUF file (it starts with {magic!r}): "
                "pass a .gguf model, or convert a checkpoint with `starchat convert`"
            )
        version = r.unpack("<I")
        if version not in (2, 3):
            raise ModelLoadError(f"{p}: GGUF version {version} is not supported (expected 2 or 3)")
        n_tensors = r.unpack("<Q")
        n_kv = r.unpack("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ModelLoadError(f"{p}: corrupt GGUF header (implausible counts)")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.unpack("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if n_dims > 8:
                raise ModelLoadError(f"{p}: corrupt GGUF tensor table ({name}: {n_dims} dims)")
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))
            tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
        alignment = int(metadata.get("general.alignment", 32) or 32)
        pos = handle.tell()
        data_offset = (pos + alignment - 1) // alignment * alignment
    info = GGUFInfo(p, version, metadata, tensors, data_offset, size)
    end = info.data_end()
    if end is not None and end > size:
        raise ModelLoadError(f"{p} is truncated ({size:,} of {end:,} bytes): re-download or re-convert it")
    return info


def find_tokens(path: str | os.PathLike[str], wanted: Iterable[str]) -> set[str]:
    """Which of the ``wanted`` token texts the file's vocabulary holds (the header only).

    ``read_gguf_info`` skips long arrays such as the vocabulary; this reads just that one
    (about 50k short strings for the StarCoder family: milliseconds). Unreadable or
    corrupt files hold nothing.
    """
    want = set(wanted)
    found: set[str] = set()
    p = Path(path)
    try:
        with p.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                return found
            r = _Reader(handle, p)
            r.unpack("<I")  # version
            r.unpack("<Q")  # tensors
            n_kv = r.unpack("<Q")
            for _ in range(min(n_kv, 1_000_000)):
                key = r.string()
                vtype = r.unpack("<I")
                if key != "tokenizer.ggml.tokens" or vtype != _ARRAY:
                    r.value(vtype)
                    continue
                item_type, length = r.unpack("<I"), r.unpack("<Q")
                if item_type != _STRING:
                    return found
                for _ in range(length):
                    text = r.string()
                    if text in want:
                        found.add(text)
                return found
    except (OSError, ModelLoadError):
        pass
    return found
