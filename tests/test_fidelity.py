"""The models' own reply cleanup and prompt bytes at the edges (MODELS.md; issue 14 "fidelity").

StarCoder2-Instruct replies lose their trailing whitespace (the model card's
``split("###")[0].rstrip()``); a StarCoder2-Instruct GGUF opened by path behaves like the
catalog name (its own template raises on a system role); StarChat2 with an empty
system prompt renders the empty system block; a generated turn-opening control token
(``<|im_start|>``, ``<|user|>``, ``<|system|>``) ends the reply. Real models: the demo
model (ChatML tokens) and tiny StarCoder-family models converted by our converter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.synthetic import TinySpec
from starchat_cli.engine.llamacpp.engine import LocalEngine
from starchat_cli.engine.llamacpp.file_format import format_for_backend
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import (
    ChatMLFormat,
    Message,
    StarChatFormat,
    StarCoder2InstructFormat,
    get_format,
)
from starchat_cli.engine.prompting.stops import without_trailing_whitespace

# StarCoder2-15B-Instruct-v0.1's own chat template (tokenizer_config.json), as the GGUF carries it.
STARCODER2_INSTRUCT_TEMPLATE = (
    "{{bos_token}}{{'You are an exceptionally intelligent coding assistant that consistently delivers "
    "accurate and reliable responses to user instructions.\\n\\n'}}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['role'] == 'system' %}\n"
    "        {{ raise_exception('System messages are not allowed in this template.') }}\n"
    "    {%- else %}\n"
    "        {%- if message['role'] == 'user' %}\n"
    "{{'### Instruction\\n' + message['content'] + '\\n\\n'}}\n"
    "        {%- else %}\n"
    "{{'### Response\\n' + message['content'] + eos_token + '\\n\\n'}}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{{'### Response\\n'}}"
)
HI = [Message("user", "hi")]


# -- trailing whitespace ---------------------------------------------------------------------


def test_trailing_whitespace_is_held_back_then_dropped():
    closed: list[bool] = []

    def chunks():
        try:
            yield from ["def f():", "\n", "    pass", "\n\n", " \n"]
        finally:
            closed.append(True)

    assert list(without_trailing_whitespace(chunks())) == ["def f():", "\n    pass"]
    stream = without_trailing_whitespace(chunks())
    next(stream)
    stream.close()  # cancelling the reply stops the engine underneath
    assert closed == [True, True]
    assert StarCoder2InstructFormat().clean_reply("x = 1\n\n\n") == "x = 1"
    assert ChatMLFormat().clean_reply("x = 1\n") == "x = 1\n"  # only where the model card says so


def test_the_stored_reply_carries_no_trailing_blank_lines_into_the_next_turn(demo_backend):
    # The demo model (ChatML vocabulary) under StarCoder2-Instruct's format: its "###" and
    # rstrip rules are text rules, so any model shows them.
    engine = LocalEngine(demo_backend, get_format("starcoder2-instruct"), None)
    turns = [Message("user", "Write a Python function that adds two numbers.")]
    gen = engine.generate(turns, GenerationParams(temperature=0, max_tokens=40))
    text = "".join(gen)
    assert text and text == text.rstrip()
    # What the next turn is rendered from ends in the reply's last visible character.
    later = engine.prompt_format.render([*turns, Message("assistant", text), Message("user", "more")])
    assert f"{text}<|endoftext|>\n\n### Instruction\nmore" in later


# -- the empty system block --------------------------------------------------------------------


def test_an_empty_system_prompt_renders_starchat2s_empty_block(demo_backend):
    engine = LocalEngine(demo_backend, ChatMLFormat(), "You are StarChat2, an expert programming assistant")
    msgs = engine.build_messages(HI, "")
    assert engine.prompt_format.render(msgs) == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert engine.prompt_format.render(engine.build_messages(HI, None)).startswith(
        "<|im_start|>system\nYou are StarChat2, an expert programming assistant<|im_end|>\n"
    )
    plain = LocalEngine(demo_backend, ChatMLFormat(), None)
    assert plain.prompt_format.render(plain.build_messages(HI, None)).startswith("<|im_start|>user\n")
    # The other formats keep their own rule: StarChat always has the block, StarCoder2-Instruct none.
    star = LocalEngine(demo_backend, StarChatFormat(), None)
    assert star.prompt_format.render(star.build_messages(HI, "")).startswith("<|system|>\n<|end|>\n<|user|>")
    sc2 = LocalEngine(demo_backend, StarCoder2InstructFormat(), None)
    assert "\n\n### Instruction\nhi\n\n" in sc2.prompt_format.render(sc2.build_messages(HI, ""))


# -- turn-opening control tokens ---------------------------------------------------------------


def forced_sampling(monkeypatch, backend, token: int, after: int) -> None:
    """The real sampler for ``after`` steps, then ``token`` (as if the model chose it)."""
    real = backend.sample
    calls = {"n": 0}

    def sample(chain):
        calls["n"] += 1
        return real(chain) if calls["n"] <= after else token

    monkeypatch.setattr(backend, "sample", sample)


def test_a_generated_im_start_ends_the_reply(demo_backend, monkeypatch):
    engine = LocalEngine(demo_backend, ChatMLFormat(), None)
    opener = demo_backend.special_token_id("<|im_start|>")
    assert opener is not None
    turns = [Message("user", "Write a long story about a dragon.")]
    params = GenerationParams(temperature=0, max_tokens=6)
    full = "".join(engine.generate(turns, params))
    forced_sampling(monkeypatch, demo_backend, opener, after=3)
    gen = engine.generate(turns, GenerationParams(temperature=0, max_tokens=20))
    text = "".join(gen)
    assert gen.stats.stop_reason == "stop" and gen.stats.generated_tokens == 3
    assert full.startswith(text) and len(text) < len(full)


@pytest.fixture(scope="module")
def tiny(tiny_models) -> dict[str, Path]:
    """Tiny real GGUFs: a StarCoder2 with StarCoder2-Instruct's template, a StarCoder with StarChat tokens."""
    sc2 = TinySpec("starcoder2", chat="none", seed=3)
    return {
        "sc2-instruct": tiny_models.gguf(sc2, "f32", chat_template=STARCODER2_INSTRUCT_TEMPLATE),
        "starchat": tiny_models.gguf(TinySpec("starcoder", chat="starchat", seed=4), "f32"),
    }


def test_starcoder2_instruct_by_path_folds_the_system_text_like_the_catalog(tiny):
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions

    backend = LlamaCppBackend(tiny["sc2-instruct"], LoadOptions(n_ctx=256))
    assert backend.metadata()["tokenizer.chat_template"] == STARCODER2_INSTRUCT_TEMPLATE
    fmt = format_for_backend(backend)
    assert fmt.name == "starcoder2-instruct"
    by_path = LocalEngine(backend, None, None)
    catalog = LocalEngine(backend, get_format("starcoder2-instruct"), None)
    system = [Message("system", "Be brief."), *HI]
    assert (
        by_path.prompt_format.render(system)
        == catalog.prompt_format.render(system)
        == (
            "<|endoftext|>You are an exceptionally intelligent coding assistant that consistently delivers "
            "accurate and reliable responses to user instructions.\n\n"
            "### Instruction\nBe brief.\n\nhi\n\n### Response\n"
        )
    )
    # Without a system prompt our bytes are the file's own template's bytes.
    from starchat_cli.engine.prompting.formats import JinjaFormat

    own = JinjaFormat(
        template=STARCODER2_INSTRUCT_TEMPLATE, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    turns = [*HI, Message("assistant", "hello"), Message("user", "more")]
    assert own.render(turns) == by_path.prompt_format.render(turns)
    gen = by_path.generate(HI, GenerationParams(temperature=0, max_tokens=4), system="Be brief.")
    list(gen)
    assert gen.stats.generated_tokens >= 1


@pytest.mark.parametrize("opener", ["<|user|>", "<|system|>", "<|assistant|>"])
def test_a_generated_starchat_turn_opener_ends_the_reply(tiny, monkeypatch, opener):
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions

    backend = LlamaCppBackend(tiny["starchat"], LoadOptions(n_ctx=256))
    engine = LocalEngine(backend, StarChatFormat(), None)
    token = backend.special_token_id(opener)
    assert token is not None
    assert backend.token_text(token) == opener and backend.piece(token) == b""  # a control token
    forced_sampling(monkeypatch, backend, token, after=2)
    gen = engine.generate(HI, GenerationParams(temperature=0, max_tokens=20))
    list(gen)
    assert gen.stats.stop_reason == "stop" and gen.stats.generated_tokens == 2
