"""The two architectures starchat converts: tensor names, hyperparameters, expected shapes.

``GPTBigCodeForCausalLM`` (StarChat-alpha/beta, StarCoder) becomes llama.cpp's ``starcoder``;
``Starcoder2ForCausalLM`` (StarChat2, StarCoder2-Instruct) becomes ``starcoder2``. Facts
from ../shared/MODELS.md: no transposes or Q/K permutations for either, ``c_attn`` is
already ``[Q | K | V]`` for multi-query GPTBigCode, and the output matrix may be absent
(tied embeddings), in which case llama.cpp reuses ``token_embd``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters.errors import ConversionError

SUPPORTED = {
    "GPTBigCodeForCausalLM": "starcoder",
    "Starcoder2ForCausalLM": "starcoder2",
}
SUPPORTED_TEXT = (
    "GPTBigCodeForCausalLM (StarChat-alpha/beta, StarCoder) and "
    "Starcoder2ForCausalLM (StarChat2, StarCoder2-Instruct)"
)


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


def plan_for(config: dict[str, Any]) -> ArchPlan:
    """The conversion plan for a checkpoint's config.json; unsupported models are a clear error."""
    archs = config.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    found = [a for a in archs if a in SUPPORTED]
    if not archs:
        # Some configs name only the model type; it is as authoritative as `architectures`.
        by_type = {"gpt_bigcode": "GPTBigCodeForCausalLM", "starcoder2": "Starcoder2ForCausalLM"}
        found = [by_type[t] for t in [config.get("model_type")] if t in by_type]
    if not found:
        named = ", ".join(map(str, archs)) if archs else f"model_type {config.get('model_type')!r}"
        raise ConversionError(f"config.json names {named}: starchat converts only {SUPPORTED_TEXT}")
    if found[0] == "GPTBigCodeForCausalLM":
        return _starcoder(config)
    return _starcoder2(config)


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


_SC_LAYER = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
_SC_RE = re.compile(r"^transformer\.h\.(\d+)\.(.+)\.(weight|bias)$")
_SC_SKIP = re.compile(r"^transformer\.h\.\d+\.attn\.(bias|masked_bias)$")


def _starcoder(config: dict[str, Any]) -> ArchPlan:
    n_embd = _int(config, "n_embd", "hidden_size")
    n_head = _int(config, "n_head", "num_attention_heads")
    n_layer = _int(config, "n_layer", "num_hidden_layers")
    n_ctx = _int(config, "n_positions", "max_position_embeddings")
    n_ff = _int(config, "n_inner", default=4 * n_embd)
    vocab = _int(config, "vocab_size")
    multi_query = bool(config.get("multi_query", True))
    n_head_kv = 1 if multi_query else n_head
    head_dim = _check_heads(n_embd, n_head, n_head_kv)
    tied = bool(config.get("tie_word_embeddings", True))
    eps = _float(config, "layer_norm_epsilon", default=1e-5)
    qkv = n_embd + 2 * n_head_kv * head_dim

    expected: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab, n_embd),
        "position_embd.weight": (n_ctx, n_embd),
        "output_norm.weight": (n_embd,),
        "output_norm.bias": (n_embd,),
    }
    explain = {
        "token_embd.weight": f"vocab_size={vocab}, n_embd={n_embd}",
        "position_embd.weight": f"n_positions={n_ctx}, n_embd={n_embd}",
    }
    if not tied:
        expected["output.weight"] = (vocab, n_embd)
        explain["output.weight"] = f"vocab_size={vocab}, n_embd={n_embd}"
    for i in range(n_layer):
        b = f"blk.{i}"
        for norm in ("attn_norm", "ffn_norm"):
            expected[f"{b}.{norm}.weight"] = (n_embd,)
            expected[f"{b}.{norm}.bias"] = (n_embd,)
        expected[f"{b}.attn_qkv.weight"] = (qkv, n_embd)
        expected[f"{b}.attn_qkv.bias"] = (qkv,)
        why = f"n_head={n_head}, kv heads={n_head_kv}, head_dim={head_dim}, n_embd={n_embd}"
        explain[f"{b}.attn_qkv.weight"] = explain[f"{b}.attn_qkv.bias"] = why
        expected[f"{b}.attn_output.weight"] = (n_embd, n_embd)
        expected[f"{b}.attn_output.bias"] = (n_embd,)
        expected[f"{b}.ffn_up.weight"] = (n_ff, n_embd)
        expected[f"{b}.ffn_up.bias"] = (n_ff,)
        expected[f"{b}.ffn_down.weight"] = (n_embd, n_ff)
        expected[f"{b}.ffn_down.bias"] = (n_embd,)
        explain[f"{b}.ffn_up.weight"] = explain[f"{b}.ffn_down.weight"] = f"n_inner={n_ff}, n_embd={n_embd}"

    def rename(name: str) -> str | None:
        if name == "transformer.wte.weight":
            return "token_embd.weight"
        if name == "transformer.wpe.weight":
            return "position_embd.weight"
        if name in ("transformer.ln_f.weight", "transformer.ln_f.bias"):
            return "output_norm." + name.rsplit(".", 1)[1]
        if name == "lm_head.weight":
            return "output.weight"
        if _SC_SKIP.match(name):
            return None  # attention-mask buffers in old .bin files
        m = _SC_RE.match(name)
        if m and m.group(2) in _SC_LAYER:
            return f"blk.{m.group(1)}.{_SC_LAYER[m.group(2)]}.{m.group(3)}"
        return ""

    transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    notes: list[str] = []
    if not multi_query:
        # Multi-head GPTBigCode stores c_attn per head as [q_h | k_h | v_h]; llama.cpp wants [Q | K | V].
        def regroup(t: np.ndarray) -> np.ndarray:
            rest = t.shape[1:]
            return t.reshape(n_head, 3, head_dim, *rest).swapaxes(0, 1).reshape(3 * n_embd, *rest)

        for i in range(n_layer):
            transforms[f"blk.{i}.attn_qkv.weight"] = regroup
            transforms[f"blk.{i}.attn_qkv.bias"] = regroup
        notes.append("multi-head attention (multi_query=false): c_attn regrouped to [Q|K|V]")
    act = config.get("activation_function", "gelu_pytorch_tanh")
    if act not in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
        notes.append(f"activation {act}: llama.cpp uses the tanh approximation of GELU")

    kvs = _shared_kvs(n_ctx, n_embd, n_ff, n_layer, n_head, n_head_kv, eps)
    return ArchPlan(
        "GPTBigCodeForCausalLM",
        "starcoder",
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        n_ctx,
        vocab,
        tied,
        kvs,
        expected,
        set(),
        rename,
        transforms,
        notes,
        explain,
    )


_SC2_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
_SC2_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def _starcoder2(config: dict[str, Any]) -> ArchPlan:
    n_embd = _int(config, "hidden_size")
    n_head = _int(config, "num_attention_heads")
    n_head_kv = _int(config, "num_key_value_heads", default=n_head)
    n_layer = _int(config, "num_hidden_layers")
    n_ctx = _int(config, "max_position_embeddings")
    n_ff = _int(config, "intermediate_size")
    vocab = _int(config, "vocab_size")
    head_dim = _check_heads(n_embd, n_head, n_head_kv)
    if config.get("head_dim") not in (None, head_dim):
        raise ConversionError(
            f"config.json: head_dim {config['head_dim']} differs from hidden_size/heads = {head_dim}, "
            "which llama.cpp's starcoder2 does not support"
        )
    tied = bool(config.get("tie_word_embeddings", True))
    eps = _float(config, "norm_epsilon", "layer_norm_epsilon", default=1e-5)
    rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    rope_type = rope.get("rope_type") or (config.get("rope_scaling") or {}).get("type") or "default"
    if rope_type not in ("default", None):
        raise ConversionError(f"config.json: RoPE scaling {rope_type!r} is not supported for starcoder2")
    use_bias = bool(config.get("use_bias", True))
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim

    expected: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab, n_embd),
        "output_norm.weight": (n_embd,),
        "output_norm.bias": (n_embd,),
    }
    explain = {"token_embd.weight": f"vocab_size={vocab}, hidden_size={n_embd}"}
    if not tied:
        expected["output.weight"] = (vocab, n_embd)
        explain["output.weight"] = f"vocab_size={vocab}, hidden_size={n_embd}"
    heads = f"heads={n_head}, kv heads={n_head_kv}, head_dim={head_dim}, hidden_size={n_embd}"
    for i in range(n_layer):
        b = f"blk.{i}"
        for norm in ("attn_norm", "ffn_norm"):
            expected[f"{b}.{norm}.weight"] = (n_embd,)
            expected[f"{b}.{norm}.bias"] = (n_embd,)
        for part, rows in (("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)):
            expected[f"{b}.{part}.weight"] = (rows, n_embd)
            explain[f"{b}.{part}.weight"] = heads
            if use_bias:
                expected[f"{b}.{part}.bias"] = (rows,)
                explain[f"{b}.{part}.bias"] = heads
        expected[f"{b}.attn_output.weight"] = (n_embd, q_dim)
        explain[f"{b}.attn_output.weight"] = heads
        expected[f"{b}.ffn_up.weight"] = (n_ff, n_embd)
        expected[f"{b}.ffn_down.weight"] = (n_embd, n_ff)
        explain[f"{b}.ffn_up.weight"] = explain[f"{b}.ffn_down.weight"] = (
            f"intermediate_size={n_ff}, hidden_size={n_embd}"
        )
        if use_bias:
            expected[f"{b}.attn_output.bias"] = (n_embd,)
            expected[f"{b}.ffn_up.bias"] = (n_ff,)
            expected[f"{b}.ffn_down.bias"] = (n_embd,)

    def rename(name: str) -> str | None:
        if name == "model.embed_tokens.weight":
            return "token_embd.weight"
        if name in ("model.norm.weight", "model.norm.bias"):
            return "output_norm." + name.rsplit(".", 1)[1]
        if name == "lm_head.weight":
            return "output.weight"
        if name.endswith("rotary_emb.inv_freq"):
            return None
        m = _SC2_RE.match(name)
        if m and m.group(2) in _SC2_LAYER:
            return f"blk.{m.group(1)}.{_SC2_LAYER[m.group(2)]}.{m.group(3)}"
        return ""

    notes = []
    sliding = config.get("sliding_window")
    if sliding:
        notes.append(
            f"sliding window {sliding}: llama.cpp attends to the whole context, so outputs differ "
            f"from transformers past {sliding} tokens"
        )
    kvs = [
        *_shared_kvs(n_ctx, n_embd, n_ff, n_layer, n_head, n_head_kv, eps),
        KV("rope.freq_base", theta, "f32"),
        KV("rope.dimension_count", head_dim, "u32"),
    ]
    return ArchPlan(
        "Starcoder2ForCausalLM",
        "starcoder2",
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        n_ctx,
        vocab,
        tied,
        kvs,
        expected,
        set(),
        rename,
        {},
        notes,
        explain,
    )
