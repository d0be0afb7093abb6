"""The conversion plan of a checkpoint: its config read and checked, the GGUF keys, the
tensor name map and expected shapes (the two architectures, and the choice between them:
``families.py``, which builds on this module).

``GPTBigCodeForCausalLM`` (StarChat-alpha/beta, StarCoder) becomes llama.cpp's ``starcoder``;
``Starcoder2ForCausalLM`` (StarChat2, StarCoder2-Instruct) becomes ``starcoder2``. Facts
from ../shared/MODELS.md: no transposes or Q/K permutations for either, ``c_attn`` is
already ``[Q | K | V]`` for multi-query GPTBigCode, and the output matrix may be absent
(tied embeddings), in which case llama.cpp reuses ``token_embd``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters.errors import ConversionError


def read_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConversionError(
            f"{hf_dir} has no config.json: pass the folder of a Hugging Face checkpoint"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: not a JSON object")
    return data


@dataclass(frozen=True)
class KV:
    """One GGUF metadata value: key suffix (after ``{arch}.``), value and kind."""

    key: str
    value: Any
    kind: str  # "u32" | "f32"


@dataclass
class ArchPlan:
    hf_architecture: str
    arch: str  # llama.cpp architecture name
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    vocab_size: int
    tied: bool
    kvs: list[KV]
    # gguf name -> expected numpy shape (rows first, as in the checkpoint)
    expected: dict[str, tuple[int, ...]]
    optional: set[str]
    # hf name -> gguf name (None = known and skipped)
    rename: Callable[[str], str | None]
    # gguf name -> a function reordering the whole float32 tensor before it is written
    transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    explain: dict[str, str] = field(default_factory=dict)  # gguf name -> how its shape follows from config

    def validate(self, shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, str]]:
        """Map checkpoint tensor names to GGUF names and check every shape against the config.

        Returns ``[(hf_name, gguf_name), ...]`` in the checkpoint's order; raises a
        :class:`ConversionError` naming the tensor on any mismatch, unknown or missing tensor.
        """
        out: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for hf_name, shape in shapes.items():
            gguf_name = self.rename(hf_name)
            if gguf_name is None:
                continue
            if gguf_name == "":
                raise ConversionError(
                    f"unexpected tensor {hf_name} (shape {tuple(shape)}) in a {self.hf_architecture} "
                    "checkpoint: is config.json from another model?"
                )
            if gguf_name == "output.weight" and self.tied:
                continue  # transformers ties it to the embeddings and ignores the stored copy
            want = self.expected.get(gguf_name)
            if want is None:
                raise ConversionError(
                    f"unexpected tensor {hf_name}: config.json has {self.n_layer} layers"
                    if gguf_name.startswith("blk.")
                    else f"unexpected tensor {hf_name} in a {self.hf_architecture} checkpoint"
                )
            if tuple(shape) != want:
                why = self.explain.get(gguf_name, "")
                raise ConversionError(
                    f"tensor {hf_name} has shape {tuple(shape)} but config.json implies {want}"
                    f"{f' ({why})' if why else ''}: the weights and config.json do not match"
                )
            if gguf_name in seen:
                raise ConversionError(f"tensors {seen[gguf_name]} and {hf_name} both map to {gguf_name}")
            seen[gguf_name] = hf_name
            out.append((hf_name, gguf_name))
        missing = [n for n in self.expected if n not in seen and n not in self.optional]
        if missing:
            first = missing[0]
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ConversionError(
                f"the checkpoint lacks tensor {first}{more} ({self.hf_architecture}, "
                f"{self.n_layer} layers): is a shard missing or config.json from another model?"
            )
        return out


def _shared_kvs(
    n_ctx: int, n_embd: int, n_ff: int, n_layer: int, n_head: int, n_head_kv: int, eps: float
) -> list[KV]:
    """The hyperparameter keys both architectures write ({arch}.context_length, ...)."""
    return [
        KV("context_length", n_ctx, "u32"),
        KV("embedding_length", n_embd, "u32"),
        KV("feed_forward_length", n_ff, "u32"),
        KV("block_count", n_layer, "u32"),
        KV("attention.head_count", n_head, "u32"),
        KV("attention.head_count_kv", n_head_kv, "u32"),
        KV("attention.layer_norm_epsilon", eps, "f32"),
    ]


def _int(config: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if value is not None:
            try:
                return int(value)
            except (TypeError, ValueError):
                raise ConversionError(f"config.json: {key} = {value!r} is not an integer") from None
    if default is not None:
        return default
    raise ConversionError(f"config.json lacks {keys[0]}: is it complete?")


def _float(config: dict[str, Any], *keys: str, default: float) -> float:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return float(value)
    return default


def _check_heads(n_embd: int, n_head: int, n_head_kv: int) -> int:
    if n_head <= 0 or n_embd % n_head:
        raise ConversionError(
            f"config.json: hidden size {n_embd} is not a multiple of {n_head} attention heads"
        )
    if n_head_kv <= 0 or n_head % n_head_kv:
        raise ConversionError(
            f"config.json: {n_head} attention heads are not a multiple of {n_head_kv} KV heads"
        )
    return n_embd // n_head
