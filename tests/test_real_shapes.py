"""converters/real_shapes.py: real-scale GGUFs of random weights, checked on tiny widths.

The benchmarks write the real sizes (benchmarks/shapes.py); here the same writer makes a
2-layer file of each architecture that llama.cpp loads and runs through starchat's engine,
and the real shapes are checked on paper against the Hub's Q4_K_M file sizes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from converters.families import plan_for
from converters.real_shapes import (
    F32,
    Q4_K,
    Q6_K,
    SHAPES,
    Shape,
    stand_in_vocab,
    tensor_bytes,
    tensor_plan,
    vocab_from_gguf,
    write_shape,
)
from converters.synthetic import TRAIN_TEXT
from converters.tokenizer import CHATML_TEMPLATE, CONTROL, STARCHAT_TEMPLATE, UNUSED

pytest.importorskip("llama_cpp")

TINY = {"n_layer": 2, "n_embd": 256, "n_head": 4, "n_ff": 512, "n_ctx": 512, "base_vocab": 1024}


def tiny(name: str) -> Shape:
    real = SHAPES[name]
    return dataclasses.replace(real, name=f"tiny-{name}", n_head_kv=min(real.n_head_kv, 2), **TINY)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    out = {}
    for name in ("starcoder2-15b", "starcoder-15b"):
        shape = tiny(name)
        vocab = stand_in_vocab(shape, corpus=[TRAIN_TEXT] * 4)
        out[name] = (shape, write_shape(shape, root / f"{shape.name}.gguf", vocab=vocab))
    return out


def fields(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    meta["tensors"] = {t.name: t for t in reader.tensors}
    return meta


@pytest.mark.parametrize(
    "name, size",
    # The Hub's Q4_K_M files (QuantFactory starcoder2-*-GGUF, bartowski, tensorblock): the mix
    # of types and the shapes together give the real file's size.
    [
        ("starcoder2-3b", 1.89e9),
        ("starcoder2-7b", 4.46e9),
        ("starcoder2-15b", 9.86e9),
        ("starcoder-15b", 9.97e9),
    ],
)
def test_real_shapes_weigh_what_the_real_q4_k_m_files_weigh(name, size):
    tensors = tensor_plan(plan_for(SHAPES[name].hf_config()))
    data = sum(tensor_bytes(kind, dims) for _, dims, kind in tensors)
    assert abs(data - size) / size < 0.01


def test_the_metadata_is_the_real_models(written):
    shape, result = written["starcoder2-15b"]
    meta = fields(result.path)
    assert meta["general.architecture"] == "starcoder2"
    assert meta["general.file_type"] == 15  # Q4_K_M
    assert meta["starcoder2.block_count"] == 2
    assert meta["starcoder2.embedding_length"] == 256
    assert meta["starcoder2.attention.head_count"] == 4
    assert meta["starcoder2.attention.head_count_kv"] == 2
    assert meta["starcoder2.feed_forward_length"] == 512
    assert meta["starcoder2.context_length"] == 512
    assert meta["starcoder2.rope.freq_base"] == pytest.approx(100_000.0)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == shape.vocab_size == 1026 == result.n_vocab
    assert tokens[:7] == [
        "<|endoftext|>",
        "<fim_prefix>",
        "<fim_middle>",
        "<fim_suffix>",
        "<fim_pad>",
        "<repo_name>",
        "<file_sep>",
    ]
    assert tokens[1024:] == ["<|im_start|>", "<|im_end|>"]  # StarChat2's ids 49152, 49153 at real size
    assert types[0] == types[1024] == types[1025] == CONTROL
    assert UNUSED in types  # the trainer stopped short: padded to the real size
    assert meta["tokenizer.ggml.bos_token_id"] == meta["tokenizer.ggml.eos_token_id"] == 0
    assert meta["tokenizer.ggml.fim_pre_token_id"] == 1
    assert meta["tokenizer.chat_template"] == CHATML_TEMPLATE
    kinds = {name: int(t.tensor_type) for name, t in meta["tensors"].items()}
    assert kinds["output.weight"] == Q6_K and kinds["token_embd.weight"] == Q4_K  # untied, as 15B
    assert kinds["blk.0.ffn_down.weight"] == Q4_K and kinds["blk.1.ffn_down.weight"] == Q6_K
    assert kinds["blk.1.attn_norm.bias"] == F32


def test_starcoder_shape_has_starchat_tokens_and_learned_positions(written):
    shape, result = written["starcoder-15b"]
    meta = fields(result.path)
    assert meta["general.architecture"] == "starcoder"
    assert meta["starcoder.attention.head_count_kv"] == 1  # multi-query
    assert meta["tokenizer.ggml.tokens"][1024:] == ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    assert meta["tokenizer.ggml.tokens"][18] == "<reponame>"
    assert meta["tokenizer.chat_template"] == STARCHAT_TEMPLATE
    tensors = meta["tensors"]
    assert "output.weight" not in tensors  # tied, as StarCoder
    assert int(tensors["position_embd.weight"].tensor_type) == F32
    assert result.types == {"F32": 19, "Q6_K": 2, "Q5_K": 2, "Q4_K": 5}


def test_weights_are_finite_small_and_silent_for_control_tokens(written):
    from gguf.quants import dequantize

    for shape, result in written.values():
        meta = fields(result.path)
        output = "token_embd.weight" if shape.tied else "output.weight"
        for name, t in meta["tensors"].items():
            if int(t.tensor_type) == F32:
                continue
            w = dequantize(t.data, t.tensor_type)
            assert np.isfinite(w).all(), name
            live = w[np.abs(w).sum(axis=-1) > 0]
            assert 0.015 < live.std() < 0.025 and abs(live.mean()) < 0.003, name
            if name == output:  # control and unused tokens: all-zero rows, never the argmax
                silent = [i for i, k in enumerate(meta["tokenizer.ggml.token_type"]) if k != 1]
                assert not np.abs(w[silent]).any() and len(live) == len(w) - len(silent)


def test_llama_cpp_runs_it_through_starchats_engine(written):
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.llamacpp.file_format import format_for_backend
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message

    for shape, result in written.values():
        backend = LlamaCppBackend(result.path, LoadOptions(n_ctx=256, n_threads=2))
        engine = LocalEngine(backend, format_for_backend(backend))  # as `starchat ask -m FILE`
        rendered = engine.prompt_format.render([Message("user", "hi")])
        assert rendered.startswith(
            "<|im_start|>user\nhi" if shape.chat == "chatml" else "<|system|>\n<|end|>"
        )
        gen = engine.generate(
            [Message("user", "Write a function.")], GenerationParams(temperature=0.0, max_tokens=8)
        )
        text = "".join(gen)
        assert gen.stats.generated_tokens == 8 and gen.stats.stop_reason == "length", text
        llm = backend.load()
        llm.reset()
        llm.eval(llm.tokenize(b"def f(x): return x", add_bos=False))
        # llama-cpp-python 0.3.x no longer copies logits into llm.scores without logits_all (that
        # array is uninitialised memory); read llama.cpp's own row, as the engine does
        logits = backend.last_logits()
        assert logits.shape == (llm.n_vocab(),) and np.isfinite(logits).all()
        assert np.ptp(logits) > 0  # a computed row, not a zeroed buffer


def test_vocab_from_a_gguf_round_trips(written, tmp_path):
    shape, result = written["starcoder2-15b"]
    vocab = vocab_from_gguf(result.path, shape)
    again = write_shape(shape, tmp_path / "again.gguf", vocab=vocab)
    a, b = fields(result.path), fields(again.path)
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.chat_template",
    ):
        assert a[key] == b[key], key


def test_an_interrupted_write_leaves_nothing(written, tmp_path):
    shape, result = written["starcoder2-15b"]
    target = tmp_path / "cut.gguf"

    def stop(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_shape(shape, target, vocab=vocab_from_gguf(result.path, shape), progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_a_base_models_vocab_gguf_gets_the_chat_tokens_at_their_real_ids(written, tmp_path):
    import gguf

    shape, result = written["starcoder2-15b"]
    meta = fields(result.path)
    base = (
        tmp_path / "vocab.gguf"
    )  # vocab-only, as llama.cpp's ggml-vocab-*.gguf: no chat tokens, no template
    writer = gguf.GGUFWriter(str(base), "starcoder2")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(meta["tokenizer.ggml.tokens"][:1024])
    writer.add_token_types(meta["tokenizer.ggml.token_type"][:1024])
    writer.add_token_merges(meta["tokenizer.ggml.merges"])
    writer.add_eos_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    vocab = vocab_from_gguf(base, shape)
    assert vocab.tokens == meta["tokenizer.ggml.tokens"] and vocab.token_types[1024:] == [CONTROL, CONTROL]
    assert vocab.chat_template == CHATML_TEMPLATE and vocab.fim_ids["pre"] == 1
