"""Converters checked against the reference implementation.

Tiny random StarCoder (GPTBigCode, multi-query) and StarCoder2 (GQA) checkpoints are
built with transformers, converted with ``converters``, loaded with llama-cpp-python and
compared with transformers on the same token ids.

Bounds (``scale`` = the largest |logit| transformers produces on the compared positions):

* f32: every tensor is bit-identical to the checkpoint, and logits agree within
  1e-3 x scale. The 1e-4 x scale target is not reachable on these random-weight models
  through llama.cpp's CPU backend: its GELU is a lookup table indexed by the fp16-rounded
  input and storing fp16 results (``GGML_GELU_FP16``), a relative error up to 2^-11 per
  activation, and random weights at this scale feed large pre-activations into it. With
  that table reproduced in transformers the gap shrinks 3-4x, to the level set by inputs
  that round to different fp16 neighbours; ``test_f32_gap_is_llama_cpp_gelu`` checks that
  at 2.5e-4 x scale. Measured: 2.8e-4 to 4.1e-4 x scale plain, ~1e-4 with the table
  reproduced. (Briefly trained tiny models, measured outside the suite, land at
  4e-5 to 8e-5 x scale.) The KV cache is kept F32 so it adds no rounding of its own.
* f16: 5e-3 x scale. Weights are rounded to fp16 (2^-12 relative) and llama.cpp also
  rounds each matmul's activations to fp16 for f16 weights, on top of the GELU table;
  measured 0.85e-3 to 1.4e-3 x scale over two layers, so the bound leaves a ~4x margin.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.errors import ConversionError, OutOfSpaceError
from converters.synthetic import TinySpec, build_checkpoint
from starchat_cli.core.errors import ExitCode

from .helpers.models import SHARDED, STARCODER, STARCODER2_SHARDED, TinyModels

pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n\tdef push(self, x):\n\t\tself.items.append(x)",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers 0123456789 and 3.14159, 1e-9, 0x1F, 1_000_000, 2024-03-15",
    "Ünïcödé, 日本語のテキスト, русский текст, Ελληνικά, العربية",
    "emoji 🚀🔥✨👩‍💻 and 🇫🇷 flags",
    "whitespace    runs\n\n\n\t\t  trailing   \n    ",
    "<|endoftext|>special<fim_prefix>def f():<fim_suffix>\n<fim_middle>",
    "<|system|>\nYou help.<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n",
    "<|im_start|>user\nwrite code<|im_end|>\n<|im_start|>assistant\n",
    "mixed123abc   456 ### Instruction\n```python\nprint('x')\n```",
    "",
    " leading space and\r\nwindows newlines\r\n",
    "SELECT * FROM t WHERE x >= 21; -- comment ≤ ≥ → λ",
]

PROMPT = "def fibonacci(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
LONG_TEXT = "\n".join(CORPUS[:7]) + PROMPT * 2

CASES = {
    # name: (spec, save options)
    "starcoder": (STARCODER, {}),
    "starcoder-tied-bin": (TinySpec("starcoder", tied=True, chat="starchat", seed=7), {"bin_shards": 2}),
    "starcoder2-tied-sharded": (STARCODER2_SHARDED, SHARDED),
    "starcoder2-untied-padded": (
        TinySpec("starcoder2", tied=False, chat="none", seed=5, extra_vocab=3, n_head_kv=1),
        {},
    ),
}


class Built:
    """One of CASES (the session's shared checkpoint) with its GGUFs, llama.cpp models and reference logits."""

    def __init__(self, name: str, models: TinyModels, root: Path) -> None:
        spec, opts = CASES[name]
        ckpt = models.checkpoint(spec, **opts)
        self.name, self.spec, self.dir = name, spec, ckpt.dir
        self.model, self.tokenizer = ckpt.model, ckpt.tokenizer
        self._models, self._opts, self._root = models, opts, root
        self._gguf: dict[str, Path] = {}
        self._llm: dict[str, object] = {}
        self._hf_logits: dict[tuple[int, ...], np.ndarray] = {}

    def gguf(self, outtype: str) -> Path:
        return self._models.gguf(self.spec, outtype, **self._opts)

    def quantized(self, qtype: str) -> Path:
        key = f"quant-{qtype}"
        if key not in self._gguf:
            from converters.quantize import quantize

            out = self._root / f"{self.name}-{qtype}.gguf"
            quantize(self.gguf("f32"), out, qtype)
            self._gguf[key] = out
        return self._gguf[key]

    def llm(self, key: str):
        if key not in self._llm:
            path = self.quantized(key[6:]) if key.startswith("quant-") else self.gguf(key)
            self._llm[key] = make_llama(
                model_path=str(path),
                logits_all=True,
                verbose=False,
                n_ctx=256,
                n_threads=2,
                type_k=0,  # GGML_TYPE_F32: no KV-cache rounding in the comparison
                type_v=0,
            )
        return self._llm[key]

    def hf_logits(self, ids: list[int]) -> np.ndarray:
        key = tuple(ids)
        if key not in self._hf_logits:
            import torch

            with torch.no_grad():
                self._hf_logits[key] = self.model(torch.tensor([ids])).logits[0].double().numpy()
        return self._hf_logits[key]

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)


def make_llama(*args, **kwargs):
    """llama_cpp.Llama as starchat loads it here: without AMX where its matmul crashes (engine/llamacpp/amx.py)."""
    import llama_cpp

    from starchat_cli.engine.llamacpp.amx import safe_loading

    with safe_loading():
        return llama_cpp.Llama(*args, **kwargs)


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


@pytest.fixture(scope="module")
def built(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            cache[name] = Built(name, tiny_models, root)
        return cache[name]

    return get


ALL = list(CASES)


# -- reference comparisons -----------------------------------------------------------


@pytest.mark.parametrize("case", ALL)
def test_tokenization_matches_transformers(built, case):
    b = built(case)
    llm = b.llm("f32")
    for text in CORPUS:
        want = b.tokenizer.encode(text)
        got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert got == want, (case, text)
        # and back: normal tokens detokenize to the same bytes
        plain = [i for i in want if i >= 5 and b.tokenizer.convert_ids_to_tokens(i) not in ("<|end|>",)]
        if plain and "<|" not in text and "<fim" not in text:
            assert llm.detokenize(want).decode("utf-8") == text


@pytest.mark.parametrize("case", ALL)
def test_f32_weights_are_bit_identical(built, case):
    import gguf

    from converters.arch import read_config
    from converters.families import plan_for

    b = built(case)
    plan = plan_for(read_config(b.dir))
    state = {k: v.detach().numpy() for k, v in b.model.state_dict().items()}
    reader = gguf.GGUFReader(b.gguf("f32"))
    tensors = {t.name: t for t in reader.tensors}
    seen = set()
    for hf_name, value in state.items():
        name = plan.rename(hf_name)
        if name == "output.weight" and b.spec.tied:
            assert name not in tensors  # llama.cpp reuses token_embd
            continue
        t = tensors[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
        data = np.asarray(t.data).reshape(value.shape)
        assert np.array_equal(data.view(np.uint32), value.view(np.uint32)), name
        seen.add(name)
    assert seen == set(tensors)


@pytest.mark.parametrize("case", ALL)
def test_f32_logits_match_transformers(built, case):
    b = built(case)
    ids = b.ids(LONG_TEXT)[:160]
    want = b.hf_logits(ids)
    got = llama_logits(b.llm("f32"), ids)
    scale = np.abs(want).max()
    diff = np.abs(got - want).max()
    assert scale > 2.0  # the random model's logits are spread, not flat
    assert diff <= 1e-3 * scale, (case, diff, scale, diff / scale)


def test_f32_gap_is_llama_cpp_gelu(built):
    """With llama.cpp's fp16 GELU table reproduced in transformers, the gap is ~1e-4 x scale."""
    import torch

    b = built("starcoder")
    ids = b.ids(LONG_TEXT)[:160]
    got = llama_logits(b.llm("f32"), ids)

    class TableGelu(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.half().float()).half().to(x.dtype)

    originals = []
    for module in b.model.modules():
        if type(module).__name__.endswith("MLP"):
            originals.append((module, module.act))
            module.act = TableGelu(module.act)
    try:
        with torch.no_grad():
            want = b.model(torch.tensor([ids])).logits[0].double().numpy()
    finally:
        for module, act in originals:
            module.act = act
    plain = np.abs(got - b.hf_logits(ids)).max()
    emulated = np.abs(got - want).max()
    scale = np.abs(want).max()
    assert emulated <= 2.5e-4 * scale, (emulated, scale)
    assert emulated < plain / 2, (emulated, plain)


@pytest.mark.parametrize("case", ["starcoder", "starcoder2-tied-sharded"])
def test_f16_logits_within_bound(built, case):
    b = built(case)
    ids = b.ids(LONG_TEXT)[:160]
    want = b.hf_logits(ids)
    got = llama_logits(b.llm("f16"), ids)
    scale = np.abs(want).max()
    diff = np.abs(got - want).max()
    assert diff <= 5e-3 * scale, (case, diff, scale, diff / scale)
    # f16 really is rounded (the comparison can tell the two files apart)
    assert diff > np.abs(llama_logits(b.llm("f32"), ids) - want).max()


@pytest.mark.parametrize("case", ["starcoder", "starcoder2-tied-sharded", "starcoder2-untied-padded"])
def test_greedy_continuation_identical_at_f32(built, case):
    import torch

    b = built(case)
    ids = b.ids(PROMPT)
    with torch.no_grad():
        out = b.model.generate(
            torch.tensor([ids]),
            max_new_tokens=32,
            min_new_tokens=32,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    want = out[0, len(ids) :].tolist()
    llm = b.llm("f32")
    llm.reset()
    llm.eval(ids)
    got = []
    for _ in range(32):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        got.append(nxt)
        llm.eval([nxt])
    assert len(want) == 32
    assert got == want


@pytest.mark.parametrize("case", ["starcoder", "starcoder2-tied-sharded"])
def test_quantized_models_keep_top1(built, case):
    """Q8_0 and Q4_K_M load and agree with transformers' top-1 on most positions.

    A random tiny model has far flatter logits than a trained one (the runner-up is often
    within a few percent of the top), so these are floors for that worst case. Measured on
    the four random models: Q8_0 0.95-0.975 top-1, Q4_K_M 0.60-0.745 top-1 and 0.97-0.99
    "transformers' top-1 is in Q4_K_M's top-5". The same models after 30-40 AdamW steps on
    the tokenizer corpus (outside the suite: training takes too long on 2 cores) keep
    0.985-1.0 (Q8_0) and 0.925-0.99 (Q4_K_M) top-1.
    """
    b = built(case)
    ids = b.ids(LONG_TEXT)[:200]
    want = b.hf_logits(ids)
    ref_top1 = want.argmax(1)
    figures = {}
    for qtype in ("Q8_0", "Q4_K_M"):
        got = llama_logits(b.llm(f"quant-{qtype}"), ids)
        top1 = float((got.argmax(1) == ref_top1).mean())
        top5 = float(np.mean([ref_top1[i] in np.argsort(got[i])[-5:] for i in range(len(ids))]))
        figures[qtype] = (top1, top5)
    assert figures["Q8_0"][0] >= 0.9, figures
    assert figures["Q4_K_M"][0] >= 0.5, figures
    assert figures["Q4_K_M"][1] >= 0.9, figures
    assert b.quantized("Q4_K_M").stat().st_size < b.quantized("Q8_0").stat().st_size


def test_q8_0_outtype_matches_llama_cpp_quantizer(built, tmp_path):
    import gguf

    b = built("starcoder")
    from converters.convert import convert_checkpoint

    ours = tmp_path / "starcoder-ours-q8.gguf"
    convert_checkpoint(b.dir, ours, "q8_0")
    r_ours = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    r_ref = {t.name: t for t in gguf.GGUFReader(b.quantized("Q8_0")).tensors}
    assert r_ours["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert r_ours["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    same = [n for n in r_ours if n in r_ref and np.array_equal(r_ours[n].data, r_ref[n].data)]
    assert "blk.0.ffn_up.weight" in same and "blk.1.attn_qkv.weight" in same


def test_bf16_to_f16_fast_path_is_exact():
    from converters.safetensors_io import f16_from_bf16, to_float32

    bits = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    with np.errstate(over="ignore"):
        want = to_float32(bits, "BF16").astype(np.float16)
    nan = np.isnan(want)
    scratch: dict = {}
    out = np.full(bits.shape, 0xABCD, np.uint16)  # reused buffers hold stale values
    for got in (f16_from_bf16(bits), f16_from_bf16(bits, out, scratch), f16_from_bf16(bits, out, scratch)):
        got = got.view(np.float16)
        assert np.array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16))
        assert np.isnan(got[nan]).all()


def test_bf16_checkpoint_converts_exactly(built, tmp_path):
    """A bf16 checkpoint to f16 (fast path) and f32 gives the values transformers sees."""
    import gguf
    import torch

    from converters.convert import convert_checkpoint

    b = built("starcoder2-tied-sharded")
    ckpt = tmp_path / "bf16"
    bf16 = copy.deepcopy(b.model).to(torch.bfloat16)  # the shared model stays float32
    bf16.save_pretrained(ckpt)
    shutil.copy(b.dir / "tokenizer.json", ckpt)
    shutil.copy(b.dir / "tokenizer_config.json", ckpt)
    state = {k: v.float().numpy() for k, v in bf16.state_dict().items()}
    for outtype in ("f16", "f32"):
        res = convert_checkpoint(ckpt, tmp_path / f"{outtype}.gguf", outtype)
        tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(res.path).tensors}
        got = tensors["blk.0.ffn_up.weight"]
        want = state["model.layers.0.mlp.c_fc.weight"]
        # f16 holds every bf16 value exactly except those below 2^-14 (f16 subnormals)
        assert got.dtype == (np.float16 if outtype == "f16" else np.float32)
        assert np.array_equal(got, want.astype(got.dtype)), outtype
        assert np.array_equal(tensors["blk.1.attn_norm.bias"], state["model.layers.1.input_layernorm.bias"])


# -- metadata, tokenizer, templates ---------------------------------------------------


def test_metadata_and_token_types(built):
    from starchat_cli.models.gguf_info import read_gguf_info

    b = built("starcoder")
    gi = read_gguf_info(b.gguf("f16"))
    md = gi.metadata
    assert gi.architecture == "starcoder"
    assert md["starcoder.context_length"] == b.spec.n_ctx
    assert md["starcoder.attention.head_count_kv"] == 1
    assert md["tokenizer.ggml.model"] == "gpt2"
    assert md["tokenizer.ggml.pre"] == "starcoder"
    # generation_config.json says 50256: never used
    assert (md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"]) == (0, 0)
    assert md["tokenizer.ggml.unknown_token_id"] == 0
    assert md["general.file_type"] == 1 and md["general.quantization_version"] == 2
    types = {t.name: t.type_name for t in gi.tensors}
    assert types["position_embd.weight"] == "F32"
    assert types["blk.0.attn_norm.bias"] == "F32" and types["blk.0.attn_qkv.bias"] == "F32"
    assert types["blk.0.attn_qkv.weight"] == "F16" and types["output.weight"] == "F16"

    llm = b.llm("f32")
    end = b.tokenizer.convert_tokens_to_ids("<|end|>")
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_is_control(vocab, end)
    assert llama_cpp.llama_vocab_is_eog(vocab, end)
    assert not llama_cpp.llama_vocab_is_control(vocab, b.ids("def")[0])


def test_padded_vocab_and_gqa_metadata(built):
    from starchat_cli.models.gguf_info import read_gguf_info

    b = built("starcoder2-untied-padded")
    md = read_gguf_info(b.gguf("f16")).metadata
    assert md["starcoder2.attention.head_count"] == 8 and md["starcoder2.attention.head_count_kv"] == 1
    assert md["starcoder2.rope.freq_base"] == pytest.approx(1e5)
    assert md["tokenizer.ggml.tokens"].length == len(b.tokenizer) + 3


MESSAGE_SETS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "write a sort"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "x"}],
    [
        {"role": "system", "content": "S\nmultiline"},
        {"role": "user", "content": "first {{ not jinja }}"},
        {"role": "assistant", "content": "```py\nprint(1)\n```"},
        {"role": "user", "content": "  second  \n"},
    ],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ],
]


@pytest.mark.parametrize("fmt", ["starchat", "chatml", "starcoder2-instruct"])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_fallback_templates_render_byte_identical(fmt, generation_prompt):
    import jinja2

    from converters.tokenizer import TEMPLATES_BY_FORMAT
    from starchat_cli.engine.prompting.formats import FORMATS, JinjaFormat, Message

    source = TEMPLATES_BY_FORMAT[fmt]
    jf = JinjaFormat(template=source, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    plain_env = jinja2.Environment()  # no trim_blocks / lstrip_blocks: same output
    for messages in MESSAGE_SETS:
        msgs = [Message(m["role"], m["content"]) for m in messages]
        want = FORMATS[fmt].render(msgs, add_generation_prompt=generation_prompt)
        assert jf.render(msgs, add_generation_prompt=generation_prompt) == want, (fmt, messages)
        plain = plain_env.from_string(source).render(
            messages=messages,
            add_generation_prompt=generation_prompt,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            raise_exception=lambda m: (_ for _ in ()).throw(ValueError(m)),
        )
        assert plain == want


def test_templates_refuse_bad_turn_order():
    """The template we write refuses a bad turn order in a renderer no one here wrote."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from converters.tokenizer import STARCHAT_TEMPLATE

    formatter = Jinja2ChatFormatter(STARCHAT_TEMPLATE, eos_token="<|end|>", bos_token="")
    with pytest.raises(Exception, match="alternate"):
        formatter(messages=[{"role": "assistant", "content": "x"}])


def _template_of(path: Path) -> str | None:
    from starchat_cli.models.gguf_info import read_gguf_info

    return read_gguf_info(path).chat_template


def test_chat_template_written_for_each_family(built, tmp_path):
    from converters.convert import convert_checkpoint
    from converters.tokenizer import CHATML_TEMPLATE, STARCHAT_TEMPLATE, STARCODER2_INSTRUCT_TEMPLATE

    # StarChat-alpha/beta: recognised from the chat tokens
    assert _template_of(built("starcoder").gguf("f16")) == STARCHAT_TEMPLATE
    # ChatML tokens: StarChat2's format
    assert _template_of(built("starcoder2-tied-sharded").gguf("f16")) == CHATML_TEMPLATE
    # No chat tokens (StarCoder2-Instruct): nothing to recognise...
    b = built("starcoder2-untied-padded")
    res = convert_checkpoint(b.dir, tmp_path / "none.gguf", "f16")
    assert _template_of(res.path) is None and res.template_source == "none"
    assert any("chat template" in w for w in res.warnings)
    # ...unless the family is given
    res = convert_checkpoint(b.dir, tmp_path / "sc2i.gguf", "f16", prompt_format="starcoder2-instruct")
    assert _template_of(res.path) == STARCODER2_INSTRUCT_TEMPLATE


def test_checkpoint_template_wins(built, tmp_path):
    from converters.convert import convert_checkpoint

    src = built("starcoder").dir
    ckpt = tmp_path / "own"
    shutil.copytree(src, ckpt)
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ messages[0]['content'] }}"
    (ckpt / "tokenizer_config.json").write_text(json.dumps(cfg))
    res = convert_checkpoint(ckpt, tmp_path / "own.gguf", "f16", prompt_format="chatml")
    assert _template_of(res.path) == "{{ messages[0]['content'] }}" and res.template_source == "checkpoint"

    del cfg["chat_template"]
    (ckpt / "tokenizer_config.json").write_text(json.dumps(cfg))
    (ckpt / "chat_template.jinja").write_text("{{ 'from file' }}")
    res = convert_checkpoint(ckpt, tmp_path / "file.gguf", "f16")
    assert _template_of(res.path) == "{{ 'from file' }}"


def test_multi_head_gptbigcode_is_regrouped(tmp_path):
    """multi_query=false stores c_attn per head; the converter regroups it to [Q|K|V]."""

    from converters.convert import convert_checkpoint

    spec = TinySpec("starcoder", multi_query=False, n_head=4, seed=3)
    model, tok = build_checkpoint(tmp_path / "mha", spec)
    res = convert_checkpoint(tmp_path / "mha", tmp_path / "mha.gguf", "f32")
    assert any("regrouped" in n for n in res.warnings)
    llm = make_llama(str(res.path), logits_all=True, verbose=False, n_ctx=128, type_k=0, type_v=0)
    import torch

    ids = tok.encode(PROMPT)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].double().numpy()
    got = llama_logits(llm, ids)
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


# -- error cases ---------------------------------------------------------------------


def _copy(built, name: str, tmp_path: Path) -> Path:
    dest = tmp_path / f"copy-{name}"
    shutil.copytree(built(name).dir, dest)
    return dest


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".gguf", ".part") or ".part" in p.name)


def test_unsupported_architecture(built, tmp_path):
    from converters.convert import convert_checkpoint

    ckpt = _copy(built, "starcoder", tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(ckpt, tmp_path / "x.gguf")
    msg = str(err.value)
    assert "LlamaForCausalLM" in msg and "GPTBigCodeForCausalLM" in msg and "Starcoder2ForCausalLM" in msg
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.services.conversion import converter_errors

    with pytest.raises(StarchatError) as mapped, converter_errors():
        raise err.value
    assert mapped.value.exit_code == ExitCode.CONVERT and mapped.value.message == msg
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "change, tensor",
    [
        ({"n_head": 4}, "transformer.h.0.attn.c_attn.weight"),
        ({"n_inner": 640}, "transformer.h.0.mlp.c_fc.weight"),
        ({"vocab_size": 999}, "lm_head.weight"),  # listed before transformer.wte
        ({"n_positions": 1024}, "transformer.wpe.weight"),
    ],
)
def test_shape_mismatch_names_the_tensor(built, tmp_path, change, tensor):
    from converters.convert import convert_checkpoint

    ckpt = _copy(built, "starcoder", tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(change)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    # bias or weight, whichever the checkpoint lists first
    stem = re.escape(tensor.rsplit(".", 1)[0])
    with pytest.raises(ConversionError, match=rf"tensor {stem}\.(weight|bias) has shape \("):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")
    assert _leftovers(tmp_path) == []


def test_starcoder2_kv_heads_mismatch(built, tmp_path):
    from converters.convert import convert_checkpoint

    ckpt = _copy(built, "starcoder2-tied-sharded", tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_key_value_heads"] = 4
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match=r"self_attn\.k_proj\.(weight|bias) has shape .*kv heads=4"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")


def test_truncated_safetensors(built, tmp_path):
    from converters.convert import convert_checkpoint

    ckpt = _copy(built, "starcoder", tmp_path)
    st = ckpt / "model.safetensors"
    size = st.stat().st_size
    with open(st, "r+b") as handle:
        handle.truncate(size - 1000)
    with pytest.raises(ConversionError, match="truncated safetensors"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")
    with open(st, "r+b") as handle:
        handle.truncate(5)
    with pytest.raises(ConversionError, match="truncated"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")
    st.write_bytes((50).to_bytes(8, "little") + b"{not json" + b" " * 60)
    with pytest.raises(ConversionError, match="corrupt safetensors header"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")
    assert _leftovers(tmp_path) == []


def test_missing_shard(built, tmp_path):
    from converters.convert import convert_checkpoint

    ckpt = _copy(built, "starcoder2-tied-sharded", tmp_path)
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert len(shards) >= 2
    shards[1].unlink()
    with pytest.raises(ConversionError, match=f"lists shard {shards[1].name} but it is missing"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")


def test_missing_tensor(built, tmp_path):
    from converters.convert import convert_checkpoint

    ckpt = _copy(built, "starcoder2-tied-sharded", tmp_path)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    victim = "model.layers.1.mlp.c_fc.bias"
    shard = index["weight_map"].pop(victim)
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    # rewrite that shard without the tensor
    from safetensors.numpy import load_file, save_file

    data = load_file(ckpt / shard)
    del data[victim]
    save_file(data, ckpt / shard)
    with pytest.raises(ConversionError, match=r"lacks tensor blk\.1\.ffn_up\.bias"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")


def test_bin_without_torch(built, tmp_path, monkeypatch):
    import sys

    from converters.convert import convert_checkpoint

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConversionError, match="needs torch"):
        convert_checkpoint(built("starcoder-tied-bin").dir, tmp_path / "x.gguf")
    assert _leftovers(tmp_path) == []


def test_no_weights_and_no_tokenizer(built, tmp_path):
    from converters.convert import convert_checkpoint

    ckpt = _copy(built, "starcoder", tmp_path)
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(ConversionError, match="no tokenizer.json"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="has no weights"):
        convert_checkpoint(ckpt, tmp_path / "x.gguf")
    with pytest.raises(ConversionError, match="no config.json"):
        convert_checkpoint(tmp_path, tmp_path / "x.gguf")


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_no_file(built, tmp_path, monkeypatch, exc):
    from converters import convert as conv

    b = built("starcoder")
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 5:
            raise exc

    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(type(exc)):
        conv.convert_checkpoint(b.dir, out, "f16", progress)
    assert len(calls) == 5
    assert list(out.parent.iterdir()) == []


def test_existing_output_and_disk_space(built, tmp_path, monkeypatch):
    from converters import convert as conv

    b = built("starcoder")
    out = tmp_path / "model.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(ConversionError, match="exists already"):
        conv.convert_checkpoint(b.dir, out, "f16")
    assert out.read_bytes() == b"keep me"

    class Usage:
        free = 1000

    monkeypatch.setattr(conv.shutil, "disk_usage", lambda p: Usage())
    with pytest.raises(OutOfSpaceError, match="not enough disk space"):
        conv.convert_checkpoint(b.dir, out, "f16", overwrite=True)
    assert out.read_bytes() == b"keep me"
    assert _leftovers(tmp_path) == ["model.gguf"]


def test_unknown_outtype(built, tmp_path):
    from converters.convert import convert_checkpoint

    with pytest.raises(ConversionError, match="f32, f16, bf16, q8_0"):
        convert_checkpoint(built("starcoder").dir, tmp_path / "x.gguf", "q4")


def test_bf16_outtype_loads(built, tmp_path):

    from converters.convert import convert_checkpoint

    b = built("starcoder2-tied-sharded")
    res = convert_checkpoint(b.dir, tmp_path / "bf16.gguf", "bf16")
    llm = make_llama(str(res.path), logits_all=True, verbose=False, n_ctx=128, type_k=0, type_v=0)
    ids = b.ids(PROMPT)
    want = b.hf_logits(ids)
    got = llama_logits(llm, ids)
    # bf16 keeps 8 mantissa bits: a looser bound than f16, but far below a wiring error
    assert np.abs(got - want).max() <= 3e-2 * np.abs(want).max()


# -- quantize ------------------------------------------------------------------------


def test_quantize_refusals(built, tmp_path):
    from converters.quantize import quantize

    src = built("starcoder").gguf("f16")
    before = src.read_bytes()
    with pytest.raises(ConversionError) as err:
        quantize(src, tmp_path / "x.gguf", "Q4_K_Z")
    assert "Q4_K_M" in str(err.value) and "Q8_0" in str(err.value) and "IQ4_XS" in str(err.value)
    with pytest.raises(ConversionError, match="refusing to overwrite the input"):
        quantize(src, src, "Q8_0")
    link = tmp_path / "link.gguf"
    os.symlink(src, link)
    with pytest.raises(ConversionError, match="refusing to overwrite the input"):
        quantize(src, link, "Q8_0")
    with pytest.raises(ConversionError, match="importance matrix"):
        quantize(src, tmp_path / "x.gguf", "IQ2_XXS")
    assert src.read_bytes() == before
    q8 = built("starcoder").quantized("Q8_0")
    with pytest.raises(ConversionError, match="already quantized"):
        quantize(q8, tmp_path / "y.gguf", "Q4_K_M")
    assert _leftovers(tmp_path) == ["link.gguf"]


def test_quantize_failure_leaves_no_file(built, tmp_path, monkeypatch):
    import llama_cpp

    from converters.quantize import quantize

    src = built("starcoder").gguf("f16")
    monkeypatch.setattr(llama_cpp, "llama_model_quantize", lambda *a: 1)
    with pytest.raises(ConversionError, match="could not quantize"):
        quantize(src, tmp_path / "q.gguf", "Q4_0")
    assert list(tmp_path.iterdir()) == []


def test_quantize_progress_and_default_name(built, tmp_path):
    from converters.quantize import quantize
    from starchat_cli.models.gguf_info import read_gguf_info

    src = tmp_path / "tiny-F16.gguf"
    shutil.copyfile(built("starcoder").gguf("f16"), src)
    seen = []
    res = quantize(src, None, "q5_k_m", progress=lambda d, t, n: seen.append((d, t)))
    assert res.path == tmp_path / "tiny-Q5_K_M.gguf" and res.qtype == "Q5_K_M"
    umask = os.umask(0o022)
    os.umask(umask)
    assert res.path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert built("starcoder").gguf("f16").stat().st_mode & 0o777 == 0o666 & ~umask
    assert read_gguf_info(res.path).quant == "Q5_K_M"
    n = len(read_gguf_info(src).tensors)
    assert seen[-1] == (n, n) and len(seen) > n // 2


def test_every_listed_type_is_a_llama_cpp_ftype():
    import llama_cpp

    from converters.quantize import quant_types
    from starchat_cli.models.gguf_info import FILE_TYPES

    types = quant_types()
    for name in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q2_K", "IQ4_XS", "F16", "BF16"):
        assert name in types
    for name, value in types.items():
        assert value == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}", llama_cpp.LLAMA_FTYPE_ALL_F32)
        if value in FILE_TYPES:
            assert FILE_TYPES[value] == name or (name, FILE_TYPES[value]) == ("F32", "F32")


def test_every_quant_type_quantizes_and_loads_or_is_refused_cleanly(built, tmp_path):

    from converters.quantize import NEEDS_IMATRIX, quant_types, quantize

    src = built("starcoder").gguf("f32")
    loaded, refused = [], {}
    for name in quant_types():
        out = tmp_path / f"{name}.gguf"
        try:
            quantize(src, out, name)
        except ConversionError as exc:
            refused[name] = exc.message
            assert not out.exists()
            continue
        llm = make_llama(str(out), verbose=False, n_ctx=64, n_threads=2)
        llm.eval(built("starcoder").ids("def f():"))
        loaded.append(name)
        out.unlink()
    common = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K"}
    assert common | {"IQ4_XS", "IQ4_NL", "F16", "BF16"} <= set(loaded), refused
    for name in NEEDS_IMATRIX:
        assert "importance matrix" in refused[name]
    assert [p.name for p in tmp_path.iterdir()] == []


# -- CLI -----------------------------------------------------------------------------


def test_cli_convert_register_info_quantize(built, tmp_path):
    from typer.testing import CliRunner

    from starchat_cli.cli.app import app

    runner = CliRunner()
    b = built("starcoder2-untied-padded")
    out = tmp_path / "sc2i-F16.gguf"
    res = runner.invoke(
        app,
        ["convert", str(b.dir), "-o", str(out), "--family", "starcoder2-instruct", "--register", "tiny-sc2"],
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.stdout and "starcoder2" in res.stdout and "registered as tiny-sc2" in res.stdout
    assert "\x1b[" not in res.output  # not a terminal: no progress bar
    info = runner.invoke(app, ["info", "tiny-sc2", "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert data["architecture"] == "starcoder2" and data["family"] == "starcoder2-instruct"
    assert data["chat_template"].startswith("{%- if messages")

    res = runner.invoke(app, ["quantize", "tiny-sc2", "--type", "Q4_K_M", "--register", "tiny-sc2-q4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sc2i-Q4_K_M.gguf").is_file()
    listing = runner.invoke(app, ["list", "--json"])
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["tiny-sc2-q4"]["quant"] == "Q4_K_M" and rows["tiny-sc2-q4"]["family"] == "starcoder2-instruct"


def test_cli_errors_are_one_line_with_exit_codes(built, tmp_path):
    from .helpers.cli import run_starchat

    b = built("starcoder")
    ckpt = _copy(built, "starcoder", tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    res = run_starchat(["convert", str(ckpt), "-o", str(tmp_path / "x.gguf")])
    err = res.stderr.decode()
    assert res.returncode == ExitCode.CONVERT, err
    assert err.count("\n") == 1 and err.startswith("starchat: error: ") and "MistralForCausalLM" in err

    res = run_starchat(["quantize", str(b.gguf("f16")), "--type", "Q9_X"])
    err = res.stderr.decode()
    assert res.returncode == ExitCode.CONVERT and err.count("\n") == 1 and "Q4_K_M" in err

    res = run_starchat(["convert", str(b.dir), "--outtype", "q4", "-o", str(tmp_path / "y.gguf")])
    assert res.returncode == ExitCode.CONVERT and "q8_0" in res.stderr.decode()

    res = run_starchat(["convert", str(b.dir), "--family", "starchat2", "-o", str(tmp_path / "y.gguf")])
    assert res.returncode == ExitCode.CONVERT and "Starcoder2ForCausalLM" in res.stderr.decode()
    assert _leftovers(tmp_path) == []


# -- memory --------------------------------------------------------------------------

PEAK_PROBE = """
import json, sys
def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
import converters.convert as conv, gguf, numpy
base = hwm()
conv.convert_checkpoint(sys.argv[1], sys.argv[2], "f16")
print(json.dumps({"base": base, "peak": hwm()}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (VmHWM)")
def test_peak_memory_does_not_grow_with_model_size(tmp_path):
    """Converting 4 wide layers takes no more memory than converting 1 (tensors are streamed)."""
    import subprocess
    import sys

    from converters.synthetic import write_wide_starcoder2

    from .helpers.cli import REPO

    growth = {}
    largest = 0
    for n_layer in (1, 4):
        ckpt = tmp_path / f"wide-{n_layer}"
        largest = write_wide_starcoder2(ckpt, n_layer)
        size = (ckpt / "model.safetensors").stat().st_size
        out = subprocess.run(
            [sys.executable, "-c", PEAK_PROBE, str(ckpt), str(tmp_path / f"wide-{n_layer}.gguf")],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        growth[n_layer] = (figures["peak"] - figures["base"], size)
        (ckpt / "model.safetensors").unlink()
    (grow1, size1), (grow4, size4) = growth[1], growth[4]
    assert size4 > 3 * size1 and largest >= 32 * 1024 * 1024
    # The extra memory is the chunks in flight (a few x 2M values), not the model: 4x the
    # layers (+230 MB of weights) must not add more than a chunk or two. Measured: +34 MB
    # for 1 layer, +45 MB for 4, with 32 MB tensors.
    assert grow4 < 2 * largest, growth
    assert grow4 - grow1 < 32 * 1024 * 1024, growth
