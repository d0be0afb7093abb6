"""Fill-in-the-middle prompts: bytes and token ids per family, repository layout, trimming, stops.

The reference ids come from the checkpoints' own transformers tokenizers (plain text encoded
without special-token parsing), never from our code; the tiny models carry the real FIM
tokens at their real ids (0 <|endoftext|>, 1 <fim_prefix>, 2 <fim_middle>, 3 <fim_suffix>,
4 <fim_pad>; StarCoder2 5 <repo_name>, 6 <file_sep>).
"""

from __future__ import annotations

import dataclasses

import pytest

from starchat_cli.core.errors import ExitCode, FimUnsupportedError
from starchat_cli.engine.llamacpp import internals
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.fim import SUFFIX_CAP, FimVocab, build_fim_prompt

from .helpers.models import FIM_SPECS

GREEDY = GenerationParams(max_tokens=12, temperature=0.0)
PREFIX = "def fibonacci(n: int) -> int:\n    "
SUFFIX = "\n    return a\n\nprint(fibonacci(10))\n"


@pytest.fixture(scope="module")
def engines(tiny_models):
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine

    made = {}

    def get(name: str, n_ctx: int = 1024) -> LocalEngine:
        key = (name, n_ctx)
        if key not in made:
            path = tiny_models.fim_gguf(name)
            made[key] = LocalEngine(LlamaCppBackend(path, LoadOptions(n_ctx=n_ctx, n_threads=2)))
        return made[key]

    return get


@pytest.fixture(scope="module")
def hf_ids(tiny_models):
    """ids(name, text): plain text as the model's own tokenizer encodes it (special-token strings stay text)."""

    def ids(name: str, text: str) -> list[int]:
        tok = tiny_models.checkpoint(FIM_SPECS[name]).tokenizer
        return tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []

    return ids


@pytest.fixture(scope="module")
def hf_tokenize(tiny_models, hf_ids):
    """(tokenize, detokenize) of the StarCoder2 model's own tokenizer."""
    tok = tiny_models.checkpoint(FIM_SPECS["starcoder2"]).tokenizer
    return lambda text: hf_ids("starcoder2", text), tok.decode


@pytest.mark.parametrize("name", ["starcoder", "starcoder2"])
def test_plain_fim_prompt_bytes_and_ids(engines, name, hf_ids):
    engine = engines(name)
    gen = engine.infill(PREFIX, SUFFIX, GREEDY)
    list(gen)
    assert gen.prompt_text == f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
    assert gen.fit.tokens == [1, *hf_ids(name, PREFIX), 3, *hf_ids(name, SUFFIX), 2]
    assert gen.stats.prompt_tokens == len(gen.fit.tokens)
    assert gen.stats.stop_reason in ("stop", "length")


def test_fim_ids_are_the_real_vocabularies(engines):
    v1, v2 = engines("starcoder").fim_vocab(), engines("starcoder2").fim_vocab()
    assert (v1.prefix, v1.middle, v1.suffix, v1.pad, v1.filename) == (1, 2, 3, 4, 5)
    assert v1.repo_name is None and v1.file_sep is None
    assert (v2.prefix, v2.middle, v2.suffix, v2.pad, v2.repo_name, v2.file_sep) == (1, 2, 3, 4, 5, 6)
    assert v2.stop_ids == {0, 1, 2, 3, 4, 5, 6}


def test_converter_writes_the_gguf_fim_ids(tiny_models):
    from starchat_cli.models.gguf_info import read_gguf_info

    md = read_gguf_info(tiny_models.fim_gguf("starcoder2")).metadata
    got = {k.split(".")[-1]: v for k, v in md.items() if k.startswith("tokenizer.ggml.fim_")}
    assert got == {
        "fim_pre_token_id": 1,
        "fim_suf_token_id": 3,
        "fim_mid_token_id": 2,
        "fim_pad_token_id": 4,
        "fim_rep_token_id": 5,
        "fim_sep_token_id": 6,
    }
    md1 = read_gguf_info(tiny_models.fim_gguf("starcoder")).metadata
    assert md1["tokenizer.ggml.fim_pre_token_id"] == 1
    assert "tokenizer.ggml.fim_sep_token_id" not in md1  # StarCoder v1 has no <file_sep>


def test_starcoder2_repository_layout(engines, hf_ids):
    engine = engines("starcoder2")
    extra = [("src/util.py", "def helper():\n    return 1\n"), ("README.md", "# demo\n")]
    gen = engine.infill(PREFIX, SUFFIX, GREEDY, extra=extra, path="src/main.py", repo="acme/demo")
    list(gen)
    assert gen.prompt_text == (
        "<repo_name>acme/demo"
        "<file_sep>src/util.py\ndef helper():\n    return 1\n"
        "<file_sep>README.md\n# demo\n"
        f"<file_sep><fim_prefix>src/main.py\n{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
    )
    ids = lambda text: hf_ids("starcoder2", text)  # noqa: E731
    assert gen.fit.tokens == [
        5,
        *ids("acme/demo"),
        6,
        *ids("src/util.py\n"),
        *ids("def helper():\n    return 1\n"),
        6,
        *ids("README.md\n"),
        *ids("# demo\n"),
        6,
        1,
        *ids("src/main.py\n"),
        *ids(PREFIX),
        3,
        *ids(SUFFIX),
        2,
    ]


def test_starcoder_v1_context_files_use_its_filename_token(engines):
    gen = engines("starcoder").infill("x = ", "\n", GREEDY, extra=[("a.py", "A = 1\n")], path="b.py")
    list(gen)
    assert gen.prompt_text == "<filename>a.py\nA = 1\n<fim_prefix>x = <fim_suffix>\n<fim_middle>"
    assert gen.fit.tokens[0] == 5 and gen.fit.tokens.count(1) == 1


def test_fim_token_strings_in_user_text_stay_text(engines, hf_ids):
    engine = engines("starcoder2")
    prefix = 's = "<fim_middle><|endoftext|>"\n'
    suffix = "# <fim_prefix> <file_sep>\n"
    gen = engine.infill(prefix, suffix, GREEDY, extra=[("x.py", "<repo_name>")], path="y.py")
    list(gen)
    toks = gen.fit.tokens
    assert toks.count(2) == 1 and toks[-1] == 2  # the only <fim_middle> is ours, at the end
    assert toks.count(1) == 1 and toks.count(0) == 0 and toks.count(5) == 0
    assert toks.count(6) == 2  # x.py's separator and the current file's
    assert (
        hf_ids("starcoder2", prefix)
        == toks[toks.index(1) + 1 + len(hf_ids("starcoder2", "y.py\n")) :][
            : len(hf_ids("starcoder2", prefix))
        ]
    )


def _vocab() -> FimVocab:
    return FimVocab(prefix=1, suffix=3, middle=2, pad=4, repo_name=5, file_sep=6, eos=0)


def test_trimming_keeps_the_text_around_the_cursor(hf_tokenize):
    tokenize, detokenize = hf_tokenize
    prefix = "".join(f"line_{i} = {i}\n" for i in range(200))
    suffix = "".join(f"after_{i} = {i}\n" for i in range(200))
    room = 300
    p = build_fim_prompt(_vocab(), tokenize, detokenize, prefix, suffix, room)
    assert len(p.tokens) <= room
    assert p.cut_prefix_tokens > 0 and p.cut_suffix_tokens > 0 and p.cut_chars > 0
    assert p.suffix_tokens == min((room - 3) // 4, SUFFIX_CAP)  # a quarter of the room after the 3 FIM tokens
    kept_prefix = p.text[len("<fim_prefix>") : p.text.index("<fim_suffix>")]
    kept_suffix = p.text[p.text.index("<fim_suffix>") + len("<fim_suffix>") : -len("<fim_middle>")]
    assert (
        prefix.endswith(kept_prefix) and "line_199 = 199\n" in kept_prefix and "line_0 =" not in kept_prefix
    )
    assert suffix.startswith(kept_suffix) and kept_suffix.startswith("after_0 = 0\n")
    assert "after_199" not in kept_suffix
    assert p.tokens[1 : 1 + p.prefix_tokens] == tokenize(prefix)[-p.prefix_tokens :]


def test_a_growing_prefix_keeps_its_first_tokens(hf_tokenize):
    """The prefix is cut in steps: typing a few characters does not move its start (KV reuse)."""
    tokenize, detokenize = hf_tokenize
    text = "".join(f"value_{i} = compute({i})\n" for i in range(150))
    firsts = []
    for cursor in range(2000, 2060, 3):
        p = build_fim_prompt(_vocab(), tokenize, detokenize, text[:cursor], text[cursor:], 400)
        assert p.cut_prefix_tokens > 0
        firsts.append(tuple(p.tokens[1:9]))
    assert len(set(firsts)) <= 2  # the cut moved at most once in 20 keystrokes


def test_far_repository_files_are_dropped_first(hf_tokenize):
    tokenize, detokenize = hf_tokenize
    far = ("far.py", "".join(f"far_{i} = {i}\n" for i in range(60)))
    near = ("near.py", "near = 1\n")
    p = build_fim_prompt(
        _vocab(), tokenize, detokenize, "x = ", "\n", 120, extra=[far, near], path="main.py", repo="r"
    )
    assert p.dropped_files == ["far.py"]
    assert "<file_sep>near.py\nnear = 1\n" in p.text and "far.py" not in p.text
    assert p.text.startswith("<repo_name>r<file_sep>near.py")
    roomy = build_fim_prompt(
        _vocab(), tokenize, detokenize, "x = ", "\n", 1000, extra=[far, near], path="main.py"
    )
    assert roomy.dropped_files == [] and roomy.text.startswith("<file_sep>far.py\n")


def _greedy_first(engine) -> int:
    """The model's greedy first token of the middle: the token decoded right after the prompt."""
    gen = engine.infill(PREFIX, SUFFIX, GenerationParams(max_tokens=2, temperature=0.0))
    assert "".join(gen) and gen.stats.generated_tokens == 2
    with engine.backend.lock:
        return internals.tokens(engine.backend.load())[len(gen.fit.tokens)]


def test_a_fim_token_ends_the_middle(engines):
    """Made a FIM stop (as <fim_pad>), the model's greedy first token ends the middle at once."""
    engine = engines("starcoder2")
    token = _greedy_first(engine)
    free = engine.infill(PREFIX, SUFFIX, GREEDY)
    assert "".join(free) and free.stats.generated_tokens > 0
    saved = engine.fim_vocab()
    try:
        engine._fim = dataclasses.replace(saved, pad=token)
        gen = engine.infill(PREFIX, SUFFIX, GREEDY)
        assert "".join(gen) == "" and gen.stats.stop_reason == "stop" and gen.stats.generated_tokens == 0
    finally:
        engine._fim = saved


def test_text_stops_apply(engines):
    engine = engines("starcoder2")
    free = engine.infill(PREFIX, SUFFIX, GenerationParams(max_tokens=12, temperature=0.0))
    text = "".join(free)
    assert len(text) >= 4
    cut = text[2:4]
    gen = engine.infill(PREFIX, SUFFIX, GenerationParams(max_tokens=12, temperature=0.0, stop=(cut,)))
    assert "".join(gen) == text[: text.index(cut)] and gen.stats.stop_reason == "stop"


def test_keystroke_requests_reuse_the_kv_prefix(engines):
    engine = engines("starcoder2", 2048)
    text = "".join(f"value_{i} = compute({i})\n" for i in range(60))
    cursor = len(text) // 2
    params = GenerationParams(max_tokens=2, temperature=0.0)
    first = engine.infill(text[:cursor], text[cursor:], params)
    list(first)
    second = engine.infill(text[: cursor + 3], text[cursor + 3 :], params)
    list(second)
    evaluated = second.stats.prompt_tokens - second.stats.cached_tokens
    assert second.stats.cached_from == "memory"
    assert evaluated <= second.stats.prompt_tokens // 2, second.stats
    assert evaluated >= 1


def test_a_model_without_fim_tokens_is_refused(demo_engine):
    with pytest.raises(FimUnsupportedError) as info:
        demo_engine.infill("def f():\n", "\n")
    err = info.value
    assert err.exit_code == ExitCode.INPUT == 6
    assert "<fim_prefix>" in err.message and "starcoder2-3b" in err.message and "starchat2" in err.message


def test_the_fake_engine_implements_infill():
    from starchat_cli.engine.contract import Engine

    from .helpers.fake_engine import FakeEngine

    fake = FakeEngine("middle text")
    assert isinstance(fake, Engine)
    gen = fake.infill("a", "b", extra=[("x.py", "x")], path="m.py")
    assert "".join(gen) == "middle text" and gen.prompt_text == "<fim_prefix>a<fim_suffix>b<fim_middle>"
    assert fake.infill_calls == [("a", "b", [("x.py", "x")], "m.py")]
