"""Small random StarCoder / StarCoder2 checkpoints, for tests and benchmarks of the converters.

    folder = tmp / "tiny"
    model, tokenizer = build_checkpoint(folder, TinySpec("starcoder2", tied=True, chat="chatml"))
    convert_checkpoint(folder, tmp / "tiny.gguf", "f32")          # converters.convert
    write_wide_starcoder2(tmp / "wide", n_layer=8)                 # real layer widths, no transformers
    tok = train_bpe(49152, "starcoder2", texts)                     # a tokenizers.Tokenizer, no transformers

The tokenizer is a byte-level BPE trained with the ``tokenizers`` library using
StarCoder's pre-tokenizer (digits split one by one, then ByteLevel without a prefix
space), StarCoder's leading special tokens (``<|endoftext|>`` = 0, FIM tokens) and each
seed model's added chat tokens (../shared/MODELS.md). Weights are seeded and float32;
norms and biases are randomised too, so a swapped or dropped tensor changes the logits.
transformers, tokenizers and torch (the test extra) load inside the functions that use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

TRAIN_TEXT = """\
def fibonacci(n: int) -> int:
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()


for (let i = 0; i < 10; i++) { console.log(`value ${i}`); }
SELECT name, count(*) FROM users WHERE age >= 21 GROUP BY name ORDER BY 2 DESC;
#include <stdio.h>
int main(void) { printf("hello, world\\n"); return 0; }
The quick brown fox jumps over the lazy dog. Write a function that reverses a string.
How do I sort a list of dictionaries by a key in Python? Use sorted(items, key=lambda d: d["key"]).
Prices: 3.14159, 2718, 1e-9, 0x1F, 1_000_000. Dates: 2024-03-15T12:00:00Z.
Ünïcödé tëxt, 日本語のテキスト, русский текст, emoji 🚀🔥✨ and symbols → ≤ ≥ ∑ λ.
"""

STARCODER_SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
# The leading special tokens of the real vocabularies, at their real ids (bigcode/starcoder and
# bigcode/starcoder2 tokenizer.json; ../shared/MODELS.md): for the FIM tests.
SPECIALS = {
    "base": STARCODER_SPECIALS,
    "starcoder": [
        *STARCODER_SPECIALS,
        "<filename>",  # 5
        "<gh_stars>",
        "<issue_start>",
        "<issue_comment>",
        "<issue_closed>",
        "<jupyter_start>",  # 10
        "<jupyter_text>",
        "<jupyter_code>",
        "<jupyter_output>",
        "<empty_output>",
        "<commit_before>",  # 15
        "<commit_msg>",
        "<commit_after>",
        "<reponame>",  # 18
    ],
    "starcoder2": [
        *STARCODER_SPECIALS,
        "<repo_name>",  # 5
        "<file_sep>",  # 6
        "<issue_start>",
        "<issue_comment>",
        "<issue_closed>",
        "<jupyter_start>",  # 10
        "<jupyter_text>",
        "<jupyter_code>",
        "<jupyter_output>",
        "<jupyter_script>",
        "<empty_output>",  # 15
    ],
}
CHAT_TOKENS = {
    "starchat": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "none": [],
}


def train_bpe(vocab_size: int = 512, vocab: str = "base", corpus: Iterable[str] | None = None):
    """A byte-level BPE like StarCoder's, as a ``tokenizers.Tokenizer`` (no transformers needed).

    ``vocab``: which leading special tokens (a key of :data:`SPECIALS`): "base" (the FIM
    tokens 0-4 only), or the real "starcoder" / "starcoder2" lists. The trainer learns merges
    from ``corpus`` (:data:`TRAIN_TEXT` by default) until ``vocab_size`` tokens or until the
    text has no pair left to merge, whichever comes first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS[vocab],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TRAIN_TEXT] * 4 if corpus is None else corpus, trainer=trainer)
    return tok


def build_tokenizer(chat: str, vocab_size: int = 512, vocab: str = "base"):
    """A PreTrainedTokenizerFast like StarCoder's (:func:`train_bpe`), with the chat tokens of one seed model."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(vocab_size, vocab),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    if CHAT_TOKENS[chat]:
        fast.add_special_tokens({"additional_special_tokens": CHAT_TOKENS[chat]})
    return fast


@dataclass
class TinySpec:
    arch: str  # "starcoder" | "starcoder2"
    tied: bool = False
    chat: str = "starchat"
    multi_query: bool = True
    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 8
    n_head_kv: int = 2  # starcoder2 only
    n_ff: int = 512
    n_ctx: int = 512
    extra_vocab: int = 0  # embedding rows beyond the tokenizer (padding)
    seed: int = 1234
    scale: float = 0.08  # std of matrix weights: logits spread over a few units
    vocab: str = "base"  # leading special tokens: a key of SPECIALS


def build_model(spec: TinySpec, n_vocab: int):
    import torch
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, Starcoder2Config, Starcoder2ForCausalLM

    common: dict[str, Any] = dict(
        vocab_size=n_vocab, bos_token_id=0, eos_token_id=0, tie_word_embeddings=spec.tied
    )
    model: Any
    if spec.arch == "starcoder":
        v1 = GPTBigCodeConfig(
            n_positions=spec.n_ctx,
            n_embd=spec.n_embd,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            n_inner=spec.n_ff,
            multi_query=spec.multi_query,
            **common,
        )
        model = GPTBigCodeForCausalLM(v1)
    else:
        v2 = Starcoder2Config(
            hidden_size=spec.n_embd,
            intermediate_size=spec.n_ff,
            num_hidden_layers=spec.n_layer,
            num_attention_heads=spec.n_head,
            num_key_value_heads=spec.n_head_kv,
            max_position_embeddings=spec.n_ctx,
            rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
            **common,
        )
        model = Starcoder2ForCausalLM(v2)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif p.ndim == 1:
                p.copy_(0.05 * noise)
            else:
                p.copy_(spec.scale * noise)
    model.eval()
    return model


def build_checkpoint(
    out_dir: Path,
    spec: TinySpec,
    *,
    bin_shards: int = 0,
    max_shard_size: str | None = None,
    chat_template: str | None = None,
):
    """Save a tiny model + tokenizer in ``out_dir``; returns (model, tokenizer).

    ``bin_shards`` > 0 writes PyTorch ``pytorch_model*.bin`` files instead of safetensors
    (transformers 5 no longer writes them), with an index when there are several.
    """
    tokenizer = build_tokenizer(spec.chat, vocab=spec.vocab)
    model = build_model(spec, len(tokenizer) + spec.extra_vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    if bin_shards:
        _save_bin(model, out_dir, bin_shards)
    else:
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size is not None else {}
        model.save_pretrained(out_dir, **kwargs)
    tokenizer.save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (out_dir / "chat_template.jinja").unlink(missing_ok=True)
    # A misleading generation_config.json, as early StarCoder2-Instruct uploads had: never read.
    (out_dir / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 50256, "eos_token_id": 50256})
    )
    return model, tokenizer


def _save_bin(model, out_dir: Path, n_shards: int) -> None:
    """The old Hub layout: torch.save'd state dicts, tied weights included as stored tensors."""
    import torch

    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if n_shards == 1:
        torch.save(state, out_dir / "pytorch_model.bin")
        return
    names = list(state)
    per = -(-len(names) // n_shards)
    weight_map = {}
    for i in range(n_shards):
        file = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = {n: state[n] for n in names[i * per : (i + 1) * per]}
        torch.save(part, out_dir / file)
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (out_dir / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def write_wide_starcoder2(
    out_dir: Path, n_layer: int, hidden: int = 1024, ff: int = 8192, vocab: str = "base"
) -> int:
    """A random float32 StarCoder2 checkpoint with wide layers (for memory tests, not accuracy).

    Written straight with safetensors (no transformers model): the tokenizer is the tiny
    one, so the largest tensors are the MLP matrices. Returns the largest tensor's bytes.
    """
    import numpy as np
    from safetensors.numpy import save_file

    tokenizer = build_tokenizer("none", vocab=vocab)
    n_vocab = len(tokenizer)
    heads, kv_heads = 16, 4
    kv = hidden // heads * kv_heads
    rng = np.random.default_rng(0)
    block = (rng.standard_normal(ff * hidden, dtype=np.float32) * 0.02).astype(np.float32)

    def rand(*shape: int):
        n = int(np.prod(shape))
        return block[:n].reshape(shape).copy()

    tensors = {"model.embed_tokens.weight": rand(n_vocab, hidden)}
    for i in range(n_layer):
        p = f"model.layers.{i}"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{p}.{norm}.weight"] = np.ones(hidden, np.float32)
            tensors[f"{p}.{norm}.bias"] = np.zeros(hidden, np.float32)
        for name, rows in (("q_proj", hidden), ("k_proj", kv), ("v_proj", kv), ("o_proj", hidden)):
            tensors[f"{p}.self_attn.{name}.weight"] = rand(rows, hidden)
            tensors[f"{p}.self_attn.{name}.bias"] = np.zeros(rows, np.float32)
        tensors[f"{p}.mlp.c_fc.weight"] = rand(ff, hidden)
        tensors[f"{p}.mlp.c_fc.bias"] = np.zeros(ff, np.float32)
        tensors[f"{p}.mlp.c_proj.weight"] = rand(hidden, ff)
        tensors[f"{p}.mlp.c_proj.bias"] = np.zeros(hidden, np.float32)
    tensors["model.norm.weight"] = np.ones(hidden, np.float32)
    tensors["model.norm.bias"] = np.zeros(hidden, np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"))
    largest = max(t.nbytes for t in tensors.values())
    del tensors
    config = {
        "architectures": ["Starcoder2ForCausalLM"],
        "model_type": "starcoder2",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": n_layer,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "vocab_size": n_vocab,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    (out_dir / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(out_dir)
    return largest
