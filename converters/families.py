"""The two architectures starchat converts, each as a plan of tensor names, GGUF keys and shapes.

``starcoder``: ``GPTBigCodeForCausalLM`` (StarChat-alpha/beta, StarCoder), multi-query attention,
learned positions, ``c_attn`` already ``[Q | K | V]``. ``starcoder2``: ``Starcoder2ForCausalLM``
(StarChat2, StarCoder2-Instruct), GQA with NEOX RoPE and separate Q/K/V.

    plan = plan_for(read_config(hf_dir))   # the family config.json names; unsupported: ConversionError
    pairs = plan.validate(shapes)           # checkpoint names -> GGUF names, every shape checked
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from converters.errors import ConversionError

from .arch import KV, ArchPlan, _check_heads, _float, _int, _shared_kvs

SUPPORTED = {
    "GPTBigCodeForCausalLM": "starcoder",
    "Starcoder2ForCausalLM": "starcoder2",
}
SUPPORTED_TEXT = (
    "GPTBigCodeForCausalLM (StarChat-alpha/beta, StarCoder) and "
    "Starcoder2ForCausalLM (StarChat2, StarCoder2-Instruct)"
)

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


def starcoder(config: dict[str, Any]) -> ArchPlan:
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


def starcoder2(config: dict[str, Any]) -> ArchPlan:
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
    rope_parameters = config.get("rope_parameters")
    rope = rope_parameters if isinstance(rope_parameters, dict) else {}
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
        return starcoder(config)
    return starcoder2(config)
