"""Read PyTorch ``pytorch_model*.bin`` shards (older Hub repos ship only those).

torch is imported only here, only when a checkpoint has no safetensors, and files are
loaded with ``weights_only=True`` (no pickled code runs) and ``mmap=True`` (tensor data
stays on disk until it is touched).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConversionError

from .safetensors_io import TensorEntry

_TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConversionError(
            "this checkpoint has only PyTorch .bin weights, and reading them needs torch: "
            "pip install torch (CPU is enough), or use a checkpoint with .safetensors files"
        ) from None
    return torch


class TorchBinFile:
    """One ``.bin`` shard, with the same small interface as :class:`SafetensorsFile`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        torch = import_torch()
        if not self.path.is_file():
            raise ConversionError(f"missing checkpoint file {self.path}: re-download the checkpoint")
        try:
            try:
                state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # Files saved before torch 1.6 (not zip-based) cannot be mapped.
                state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a bad file
            raise ConversionError(
                f"{self.path}: cannot read this PyTorch checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}): re-download it"
            ) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConversionError(f"{self.path}: not a state dict of tensors")
        self._state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self.tensors: dict[str, TensorEntry] = {}
        for name, t in self._state.items():
            dtype = _TORCH_DTYPES.get(str(t.dtype).removeprefix("torch."), str(t.dtype))
            n_bytes = t.numel() * t.element_size()
            self.tensors[name] = TensorEntry(name, dtype, tuple(t.shape), self.path, 0, n_bytes)

    def array(self, name: str) -> np.ndarray:
        torch = import_torch()
        t = self._state[name].contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16)
        return t.numpy()

    def prefetch(self, name: str, begin: int, end: int) -> None:
        pass

    def release(self, name: str, begin: int = 0, end: int | None = None) -> None:
        if end is None:
            self._state.pop(name, None)

    def close(self) -> None:
        self._state.clear()
