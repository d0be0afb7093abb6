"""GGUF files with a real model's shapes and random quantized weights: real-scale benchmarks.

    from converters.real_shapes import SHAPES, write_shape
    result = write_shape(SHAPES["starcoder2-15b"], Path("/scratch/starcoder2-15b.gguf"))  # ~9.9 GB

Each shape is a catalog model's architecture as its config.json has it (layers, widths, heads
and KV heads, feed-forward width, context length, RoPE theta), written in the mix of tensor
types llama.cpp's Q4_K_M gives it (mostly Q4_K; Q6_K for the output matrix and for attn_v and
ffn_down in about half of the layers; Q5_K for StarCoder's fused attn_qkv; 1-D tensors and
position embeddings F32). The quantized blocks are random bytes with small finite fp16
super-block scales, so loading, prompt evaluation and decoding cost what the real model's do;
the text the model writes is noise.

The shapes: ``starcoder2-3b``, ``starcoder2-7b``, ``starcoder2-15b`` (also the shape of
StarChat2-15B and StarCoder2-15B-Instruct) and ``starcoder-15b`` (StarCoder / StarCoderBase,
the shape of StarChat-alpha and -beta). The StarCoder2 shapes carry StarChat2's vocabulary
and ChatML template (49154 tokens, ``<|im_start|>`` 49152, ``<|im_end|>`` 49153), the
StarCoder shape StarChat's (49156 tokens, ``<|system|>`` 49152 ... ``<|end|>`` 49155), so
``starchat ask -m FILE`` picks the right prompt format from the file; the base models'
vocabularies are these minus the chat tokens (2 or 4 embedding rows: no measurable cost).

The tokenizer is a stand-in of the real size: the real special tokens at their real ids
(``<|endoftext|>`` 0, the FIM tokens, ...), then a byte-level BPE (StarCoder's pre-tokenizer)
trained on the Python standard library's sources, unused ids up to the real size if the
trainer stops short, then the chat tokens. Token counts of a given text differ from the real
model's (Python code comes out at about 4 characters per token; other languages and prose
in more tokens than with the real one); the compute per token does not. ``vocab=`` takes
the tokens of a vocab-only GGUF instead (:func:`vocab_from_gguf`). Control and unused tokens get
all-zero output rows, so greedy decoding never ends a reply early on an end-of-turn token.
Written tensor by tensor in chunks through an unnamed temp file (``converters.outfile``):
memory stays small and nothing half-written appears under the target name.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from converters.errors import ConversionError
from converters.outfile import DISK_FULL, PendingOutput, check_target, output_failure

from .arch import ArchPlan
from .convert import check_disk, write_kv, write_metadata
from .families import plan_for
from .synthetic import CHAT_TOKENS, TRAIN_TEXT, train_bpe
from .tokenizer import CONTROL, FIM_TOKENS, NORMAL, TEMPLATES_BY_FORMAT, Vocab, read_vocab

# GGML types (gguf.GGMLQuantizationType) and llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M
F32, Q4_K, Q5_K, Q6_K = 0, 12, 13, 14
Q4_K_M = 15
QK_K = 256  # values per K-quant super-block
BLOCK_BYTES = {Q4_K: 144, Q5_K: 176, Q6_K: 210}
# Where each block keeps its fp16 super-block scales, and the values written there: chosen so
# that the dequantized weights have a standard deviation of about 0.02 and a mean near zero
# for uniformly random quants and 6-bit (int8 for Q6_K) sub-block scales, like trained
# weights (initializer_range 0.013-0.02). Q4_K/Q5_K: w = d*sc*q - dmin*m; Q6_K: w = d*sc*(q-32).
SCALES = {
    Q4_K: ((0, 7.8e-5), (2, 5.8e-4)),
    Q5_K: ((0, 3.8e-5), (2, 5.9e-4)),
    Q6_K: ((208, 1.46e-5),),
}
WEIGHT_STD = 0.02  # of the F32 position embeddings
CHUNK_BYTES = 16 * 1024 * 1024  # generated and written at a time

ProgressFn = Callable[[int, int], None]  # (bytes written, bytes total)


@dataclass(frozen=True)
class Shape:
    """A model's architecture as its config.json states it, and the vocabulary it is written with."""

    name: str
    arch: str  # "starcoder2" | "starcoder" (llama.cpp's names)
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    tied: bool  # no output matrix: llama.cpp reuses token_embd
    rope_theta: float = 10000.0  # starcoder2 only
    base_vocab: int = 49152  # the base model's vocabulary; the chat tokens follow it
    specials: str = "starcoder2"  # a key of converters.synthetic.SPECIALS: tokens 0, 1, ...
    chat: str = "chatml"  # a key of converters.synthetic.CHAT_TOKENS
    prompt_format: str = "chatml"  # a key of converters.tokenizer.TEMPLATES_BY_FORMAT
    stands_for: str = ""

    @property
    def vocab_size(self) -> int:
        return self.base_vocab + len(CHAT_TOKENS[self.chat])

    def hf_config(self, vocab_size: int | None = None) -> dict[str, Any]:
        """A config.json of this shape, as the real checkpoint's (read by ``plan_for``)."""
        n_vocab = vocab_size or self.vocab_size
        if self.arch == "starcoder":
            return {
                "architectures": ["GPTBigCodeForCausalLM"],
                "n_embd": self.n_embd,
                "n_head": self.n_head,
                "n_layer": self.n_layer,
                "n_inner": self.n_ff,
                "n_positions": self.n_ctx,
                "multi_query": self.n_head_kv == 1,
                "layer_norm_epsilon": 1e-5,
                "tie_word_embeddings": self.tied,
                "vocab_size": n_vocab,
            }
        return {
            "architectures": ["Starcoder2ForCausalLM"],
            "hidden_size": self.n_embd,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_head_kv,
            "num_hidden_layers": self.n_layer,
            "intermediate_size": self.n_ff,
            "max_position_embeddings": self.n_ctx,
            "rope_theta": self.rope_theta,
            "norm_epsilon": 1e-5,
            "use_bias": True,
            "tie_word_embeddings": self.tied,
            "vocab_size": n_vocab,
        }


# From the models' config.json files (bigcode/starcoder2-{3b,7b,15b}, bigcode/starcoder): 3B
# and 7B tie the output matrix to the embeddings, 15B does not; StarCoder (GPTBigCode) ties it.
SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("starcoder2-3b", "starcoder2", 30, 3072, 24, 2, 12288, 16384, True, 999999.4420358813),
        Shape("starcoder2-7b", "starcoder2", 32, 4608, 36, 4, 18432, 16384, True, 1_000_000.0),
        Shape(
            "starcoder2-15b", "starcoder2", 40, 6144, 48, 4, 24576, 16384, False, 100_000.0,
            stands_for="starchat2-15b, starcoder2-15b-instruct",
        ),
        Shape(
            "starcoder-15b", "starcoder", 40, 6144, 48, 1, 24576, 8192, True,
            specials="starcoder", chat="starchat", prompt_format="starchat",
            stands_for="starchat-alpha, starchat-beta",
        ),
    )
}  # fmt: skip


@dataclass
class ShapeResult:
    path: Path
    shape: str
    n_bytes: int
    n_tensors: int
    n_params: int
    n_vocab: int
    seconds: float
    types: dict[str, int]  # tensors per GGML type name
    warnings: list[str] = field(default_factory=list)


def more_bits(layer: int, n_layer: int) -> bool:
    """llama.cpp's ``use_more_bits``: the layers whose attn_v and ffn_down Q4_K_M keeps in Q6_K."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


def q4_k_m_type(name: str, dims: tuple[int, ...], n_layer: int, tied: bool) -> int:
    """The GGML type llama.cpp's Q4_K_M mix gives a tensor of these two architectures."""
    if len(dims) < 2 or name.startswith("position_embd."):
        return F32  # llama.cpp never quantizes 1-D tensors or position embeddings
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return Q6_K
    if name.startswith("blk.") and (".attn_v." in name or ".ffn_down." in name):
        return Q6_K if more_bits(int(name.split(".")[1]), n_layer) else Q4_K
    if ".attn_qkv." in name:
        return Q5_K
    return Q4_K


def tensor_bytes(ggml_type: int, dims: tuple[int, ...]) -> int:
    n = int(np.prod(dims))
    return 4 * n if ggml_type == F32 else n // QK_K * BLOCK_BYTES[ggml_type]


def tensor_plan(plan: ArchPlan) -> list[tuple[str, tuple[int, ...], int]]:
    """Every tensor of the file: (GGUF name, numpy shape rows-first, GGML type)."""
    out = []
    for name, dims in plan.expected.items():
        kind = q4_k_m_type(name, dims, plan.n_layer, plan.tied)
        if kind != F32 and dims[-1] % QK_K:
            raise ConversionError(
                f"{name}: rows of {dims[-1]} values are not whole {QK_K}-value K-quant blocks"
            )
        out.append((name, dims, kind))
    return out


def code_corpus(max_chars: int = 16_000_000) -> list[str]:
    """The Python standard library's own sources (not its tests, not site-packages), in path
    order: a few MB of real code on every machine that runs this, to train a tokenizer on."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3"}
    texts: list[str] = []
    size = 0
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            text = path.read_text("utf-8", errors="replace")
        except OSError:
            continue
        texts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return texts


def stand_in_vocab(shape: Shape, corpus: Iterable[str] | None = None) -> Vocab:
    """A byte-level BPE of the shape's real size, its special and chat tokens at their real ids,
    trained on ``corpus`` (default: :func:`code_corpus`; a few seconds)."""
    if corpus is None:
        corpus = code_corpus() or [TRAIN_TEXT]
    tok = train_bpe(shape.base_vocab, shape.specials, corpus)
    data = json.loads(tok.to_str())
    for i, text in enumerate(CHAT_TOKENS[shape.chat]):
        added = {"id": shape.base_vocab + i, "content": text, "special": True, "normalized": False}
        data["added_tokens"].append({**added, "single_word": False, "lstrip": False, "rstrip": False})
    eot = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data), "utf-8")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(eot), "utf-8")
        config = {"bos_token_id": 0, "eos_token_id": 0}
        return read_vocab(Path(tmp), config, shape.vocab_size, prompt_format=shape.prompt_format)


def vocab_from_gguf(path: Path, shape: Shape) -> Vocab:
    """The tokenizer of a (vocab-only) GGUF for ``shape``: its tokens, types, merges and ids; the
    shape's chat tokens appended at their real ids when it lacks them (a base model's vocabulary);
    its chat template, else the shape's. Its size sets the embedding rows."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def get(key: str, default: Any = None) -> Any:
        f = fields.get(key)
        return f.contents() if f is not None else default

    tokens = list(get("tokenizer.ggml.tokens") or [])
    if get("tokenizer.ggml.model") != "gpt2" or not tokens:
        raise ConversionError(f"{path}: no gpt2 (byte-level BPE) vocabulary in this GGUF")
    types = [int(t) for t in get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))]
    chat = CHAT_TOKENS[shape.chat]
    if len(tokens) == shape.base_vocab and not set(chat) & set(tokens):
        tokens, types = tokens + chat, types + [CONTROL] * len(chat)
    template = get("tokenizer.chat_template")
    eos = int(get("tokenizer.ggml.eos_token_id", 0))
    index = {t: i for i, t in enumerate(tokens)}
    return Vocab(
        tokens=tokens,
        token_types=types,
        merges=list(get("tokenizer.ggml.merges", [])),
        bos_id=int(get("tokenizer.ggml.bos_token_id", eos)),
        eos_id=eos,
        unk_id=int(get("tokenizer.ggml.unknown_token_id", eos)),
        chat_template=template or TEMPLATES_BY_FORMAT[shape.prompt_format],
        template_source="gguf" if template else f"catalog:{shape.prompt_format}",
        fim_ids={kind: index[text] for kind, text in FIM_TOKENS.items() if text in index},
    )


def _quant_chunks(
    kind: int, dims: tuple[int, ...], rng: np.random.Generator, silent: np.ndarray | None
) -> Iterator[np.ndarray]:
    """Random blocks of ``kind`` in row chunks, their fp16 scales set (zero in ``silent`` rows)."""
    rows, cols = dims
    per_row, size = cols // QK_K, BLOCK_BYTES[kind]
    step = max(1, CHUNK_BYTES // (per_row * size))
    scales = [(at, np.frombuffer(np.float16(v).tobytes(), np.uint8)) for at, v in SCALES[kind]]
    for start in range(0, rows, step):
        n = min(step, rows - start)
        n_bytes = n * per_row * size
        # the generator's raw 64-bit words: four times faster than rng.integers(..., uint8)
        raw = rng.bit_generator.random_raw(-(-n_bytes // 8)).view(np.uint8)
        blocks = raw[:n_bytes].reshape(n, per_row, size)
        for at, value in scales:
            blocks[:, :, at : at + 2] = value
        if silent is not None:
            hit = silent[(silent >= start) & (silent < start + n)] - start
            for at, _ in scales:
                blocks[hit, :, at : at + 2] = 0
        yield blocks


def _f32_chunks(name: str, dims: tuple[int, ...], rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Norm weights 1, biases 0 (LayerNorm then passes the random signal on), position embeddings random."""
    if len(dims) == 1:
        yield np.full(dims, 1.0 if name.endswith("norm.weight") else 0.0, np.float32)
        return
    step = max(1, CHUNK_BYTES // (4 * dims[1]))
    for start in range(0, dims[0], step):
        n = min(step, dims[0] - start)
        yield rng.standard_normal((n, dims[1]), dtype=np.float32) * np.float32(WEIGHT_STD)


def write_shape(
    shape: Shape,
    out: str | os.PathLike[str],
    *,
    vocab: Vocab | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ShapeResult:
    """Write ``shape`` as a Q4_K_M-typed GGUF of random weights at ``out`` (replacing it)."""
    import gguf

    started = time.perf_counter()
    target = Path(out).expanduser()
    check_target(target)
    vocab = vocab or stand_in_vocab(shape)
    plan = plan_for(shape.hf_config(len(vocab.tokens)))
    tensors = tensor_plan(plan)
    # The rows of the output matrix that would emit control or unused tokens: left at zero.
    silent = np.array([i for i, t in enumerate(vocab.token_types) if t != NORMAL], dtype=np.int64)
    output_name = "token_embd.weight" if plan.tied else "output.weight"
    sizes = [tensor_bytes(kind, dims) for _, dims, kind in tensors]
    total = sum(sizes)
    pending = PendingOutput(target)
    writer = None
    try:
        vocab_bytes = sum(len(s.encode("utf-8")) + 8 for s in vocab.tokens + vocab.merges)
        check_disk(target.parent, total + vocab_bytes + 1024 * 1024 + len(tensors) * 32)
        writer = gguf.GGUFWriter(pending.path, plan.arch)
        write_metadata(writer, plan, vocab, Q4_K_M, f"{shape.name} (random weights)")
        for (name, dims, kind), n_bytes in zip(tensors, sizes, strict=True):
            raw = gguf.GGMLQuantizationType(kind)
            writer.add_tensor_info(name, dims, np.dtype(np.float32), n_bytes, raw_dtype=raw)
        writer.write_header_to_file()
        write_kv(writer)
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        fout = writer.fout[0]
        writer.write_padding(fout, fout.tell())
        rng = np.random.default_rng(seed)
        done = 0
        for (name, dims, kind), n_bytes in zip(tensors, sizes, strict=True):
            rows_off = silent if name == output_name else None
            chunks = _f32_chunks(name, dims, rng) if kind == F32 else _quant_chunks(kind, dims, rng, rows_off)
            written = 0
            for chunk in chunks:
                fout.write(chunk.data.cast("B"))
                written += chunk.nbytes
                done += chunk.nbytes
                if progress is not None:
                    progress(done, total)
            if written != n_bytes:
                raise AssertionError(f"{name}: wrote {written} bytes, expected {n_bytes}")
            writer.write_padding(fout, written)
        fout.flush()
        os.fsync(fout.fileno())
        writer.close()
        writer = None
        pending.commit()
    except BaseException as exc:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        pending.discard()
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise output_failure(target, exc) from exc
        raise
    names = {F32: "F32", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K"}
    types: dict[str, int] = {}
    for _, _, kind in tensors:
        types[names[kind]] = types.get(names[kind], 0) + 1
    return ShapeResult(
        path=target,
        shape=shape.name,
        n_bytes=target.stat().st_size,
        n_tensors=len(tensors),
        n_params=sum(int(np.prod(d)) for _, d, _ in tensors),
        n_vocab=len(vocab.tokens),
        seconds=time.perf_counter() - started,
        types=types,
        warnings=list(vocab.warnings),
    )
