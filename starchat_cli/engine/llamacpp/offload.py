"""How many layers to offload to the GPU: pure functions over a model's shape and free memory.

The device must hold, for k offloaded layers (llama.cpp offloads the *last* k blocks):

    weights of those k blocks
  + their KV cache:  n_ctx x (n_kv_heads x head_dim) x 2 (K and V) x bytes per element, per layer
  + a compute buffer margin (see :func:`compute_margin`)
  + the output tensor, when every block fits (llama.cpp's n_gpu_layers = n_layers + 1)

All layers when everything fits, otherwise the most that fit, never more. The token
embedding always stays in host memory (llama.cpp keeps it there).
"""

from __future__ import annotations

from dataclasses import dataclass

from starchat_cli.core.units import GIB as GIB  # re-exported: the tests and callers size budgets with it
from starchat_cli.core.units import MIB, format_bytes
from starchat_cli.models.gguf_info import GGUFInfo


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    layer_bytes: tuple[int, ...]  # weight bytes of each block, in order
    output_bytes: int  # the output matrix (a tied model duplicates token_embd for it)
    n_embd: int
    n_vocab: int
    n_embd_k: int  # n_kv_heads x key head dim
    n_embd_v: int  # n_kv_heads x value head dim
    context_length: int = 0

    @classmethod
    def uniform(
        cls,
        n_layers: int,
        layer_bytes: int,
        output_bytes: int,
        *,
        n_embd: int,
        n_vocab: int,
        n_kv_heads: int,
        head_dim: int,
        context_length: int = 0,
    ) -> ModelShape:
        return cls(
            n_layers,
            (layer_bytes,) * n_layers,
            output_bytes,
            n_embd,
            n_vocab,
            n_kv_heads * head_dim,
            n_kv_heads * head_dim,
            context_length,
        )

    @classmethod
    def from_gguf(cls, info: GGUFInfo) -> ModelShape:
        n_layers = int(info.block_count or 0)
        n_embd = int(info.arch_key("embedding_length", 0) or 0)
        n_head = _first(info.arch_key("attention.head_count", 1)) or 1
        n_kv = _first(info.arch_key("attention.head_count_kv", n_head)) or n_head
        head_k = int(info.arch_key("attention.key_length", 0) or 0) or (n_embd // n_head if n_head else 0)
        head_v = int(info.arch_key("attention.value_length", 0) or 0) or head_k
        layers = [0] * n_layers
        output = 0
        embd = 0
        for t in info.tensors:
            size = t.n_bytes or 0
            if t.name.startswith("blk."):
                idx = int(t.name.split(".")[1])
                if 0 <= idx < n_layers:
                    layers[idx] += size
            elif t.name.startswith("output."):
                output += size
            elif t.name.startswith("token_embd."):
                embd += size
        if not any(t.name == "output.weight" for t in info.tensors):
            output += embd  # tied embeddings: llama.cpp loads a copy of token_embd as the output
        tokens = info.metadata.get("tokenizer.ggml.tokens")
        n_vocab = int(getattr(tokens, "length", 0) or info.arch_key("vocab_size", 0) or 0)
        return cls(
            n_layers,
            tuple(layers),
            output,
            n_embd,
            n_vocab,
            n_kv * head_k,
            n_kv * head_v,
            int(info.context_length or 0),
        )


def _first(value: object) -> int:
    """Some GGUFs store per-layer head counts as an array; the planner uses the first."""
    if isinstance(value, list):
        return int(value[0]) if value else 0
    return int(value or 0)  # type: ignore[call-overload]


def kv_cache_bytes(
    shape: ModelShape, n_ctx: int, layers: int | None = None, bytes_per_element: int = 2
) -> int:
    """KV cache bytes for ``layers`` blocks (default: all) at ``n_ctx`` (f16 cache by default)."""
    n = shape.n_layers if layers is None else layers
    return n_ctx * n * (shape.n_embd_k + shape.n_embd_v) * bytes_per_element


def compute_margin(shape: ModelShape, n_batch: int = 512) -> int:
    """Room for llama.cpp's compute buffers: 256 MiB plus one batch of logits and activations."""
    return 256 * MIB + n_batch * (shape.n_vocab + 4 * shape.n_embd) * 4


@dataclass(frozen=True)
class OffloadPlan:
    layers: int  # blocks on the device
    n_layers: int
    output: bool  # the output matrix on the device too
    needed_bytes: int  # device memory this plan uses (estimate)
    free_bytes: int
    kv_bytes: int  # the whole KV cache at n_ctx
    n_ctx: int
    device: str = "GPU"

    @property
    def n_gpu_layers(self) -> int:
        """The value for llama.cpp's n_gpu_layers (blocks, plus one for the output matrix)."""
        return self.layers + (1 if self.output else 0)

    @property
    def full(self) -> bool:
        return self.layers == self.n_layers and self.output

    def describe(self) -> str:
        return (
            f"offloading {self.layers}/{self.n_layers} layers to the {self.device}: "
            f"{format_bytes(self.needed_bytes, 'GiB')} of {format_bytes(self.free_bytes, 'GiB')} free; "
            f"KV cache {format_bytes(self.kv_bytes, 'GiB')} at n_ctx {self.n_ctx}"
        )


def plan_offload(
    shape: ModelShape,
    n_ctx: int,
    free_bytes: int,
    *,
    device: str = "GPU",
    n_devices: int = 1,
    kv_bytes_per_element: int = 2,
) -> OffloadPlan:
    """The most layers that fit in ``free_bytes`` (summed over ``n_devices``), never more."""
    margin = compute_margin(shape) * max(1, n_devices)
    per_layer_kv = kv_cache_bytes(shape, n_ctx, 1, kv_bytes_per_element)
    kv_all = kv_cache_bytes(shape, n_ctx, None, kv_bytes_per_element)

    def need(k: int, output: bool) -> int:
        tail = shape.layer_bytes[shape.n_layers - k :] if k else ()
        return sum(tail) + k * per_layer_kv + (shape.output_bytes if output else 0) + margin

    if need(shape.n_layers, True) <= free_bytes:
        return OffloadPlan(
            shape.n_layers,
            shape.n_layers,
            True,
            need(shape.n_layers, True),
            free_bytes,
            kv_all,
            n_ctx,
            device,
        )
    best = 0
    for k in range(1, shape.n_layers + 1):
        if need(k, False) <= free_bytes:
            best = k
        else:
            break
    used = need(best, False) if best else 0
    return OffloadPlan(best, shape.n_layers, False, used, free_bytes, kv_all, n_ctx, device)


def fewer_layers(n_gpu_layers: int, n_layers: int) -> int:
    """The next, smaller attempt after an out-of-memory failure: three quarters, then 0."""
    current = n_layers + 1 if n_gpu_layers < 0 else n_gpu_layers
    smaller = current * 3 // 4
    return smaller if smaller < current and smaller >= 1 else 0
