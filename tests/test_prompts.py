"""Prompt formats rendered byte for byte as ../shared/MODELS.md gives them."""

from __future__ import annotations

import pytest

from starchat_cli.engine.prompting.formats import (
    FORMATS,
    ChatMLFormat,
    JinjaFormat,
    Message,
    StarChatFormat,
    StarCoder2InstructFormat,
    get_format,
)
from starchat_cli.models.catalog import CATALOG

SYS = "You are a helpful coding assistant."
CONVERSATION = [
    Message("system", SYS),
    Message("user", "Write hello world in C."),
    Message("assistant", '```c\nint main(){puts("hi");}\n```'),
    Message("user", "Now in Rust."),
]


def test_starchat_alpha_beta_multi_turn_matches_model_card():
    expected = (
        "<|system|>\nYou are a helpful coding assistant.<|end|>\n"
        "<|user|>\nWrite hello world in C.<|end|>\n"
        '<|assistant|>\n```c\nint main(){puts("hi");}\n```<|end|>\n'
        "<|user|>\nNow in Rust.<|end|>\n"
        "<|assistant|>\n"
    )
    assert StarChatFormat().render(CONVERSATION) == expected


def test_starchat_without_system_keeps_an_empty_system_block():
    out = StarChatFormat().render([Message("user", "hi")])
    assert out == "<|system|>\n<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_starchat2_chatml_multi_turn():
    expected = (
        "<|im_start|>system\nYou are a helpful coding assistant.<|im_end|>\n"
        "<|im_start|>user\nWrite hello world in C.<|im_end|>\n"
        '<|im_start|>assistant\n```c\nint main(){puts("hi");}\n```<|im_end|>\n'
        "<|im_start|>user\nNow in Rust.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert ChatMLFormat().render(CONVERSATION) == expected


def test_chatml_single_turn_with_model_card_system_prompt():
    system = CATALOG["starchat2"].default_system
    assert system == "You are StarChat2, an expert programming assistant"
    out = ChatMLFormat().render([Message("system", system), Message("user", "q")])
    assert out == (
        "<|im_start|>system\nYou are StarChat2, an expert programming assistant<|im_end|>\n"
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    )


def test_starcoder2_instruct_single_turn():
    out = StarCoder2InstructFormat().render([Message("user", "Sort a list.")])
    assert out == (
        "<|endoftext|>You are an exceptionally intelligent coding assistant that consistently "
        "delivers accurate and reliable responses to user instructions.\n\n"
        "### Instruction\nSort a list.\n\n### Response\n"
    )


def test_starcoder2_instruct_multi_turn_and_system_folded_into_first_instruction():
    out = StarCoder2InstructFormat().render(CONVERSATION)
    assert out == (
        "<|endoftext|>You are an exceptionally intelligent coding assistant that consistently "
        "delivers accurate and reliable responses to user instructions.\n\n"
        "### Instruction\nYou are a helpful coding assistant.\n\nWrite hello world in C.\n\n"
        '### Response\n```c\nint main(){puts("hi");}\n```<|endoftext|>\n\n'
        "### Instruction\nNow in Rust.\n\n"
        "### Response\n"
    )


def test_generation_prompt_can_be_left_off():
    msgs = [Message("user", "a"), Message("assistant", "b")]
    assert ChatMLFormat().render(msgs, add_generation_prompt=False).endswith("b<|im_end|>\n")
    assert StarChatFormat().render(msgs, add_generation_prompt=False).endswith("<|assistant|>\nb<|end|>\n")


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_turns_must_alternate(fmt):
    with pytest.raises(ValueError, match="alternate"):
        fmt.render([Message("user", "a"), Message("user", "b")])
    with pytest.raises(ValueError, match="alternate"):
        fmt.render([Message("system", "s"), Message("assistant", "a")])


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_a_system_note_separates_two_turns_of_one_role(fmt):
    """[system, user] repeated (a system prompt before each question, as llama.cpp's server
    tests send): every note and question is in the prompt, in order."""
    msgs = [
        Message("system", "Book"),
        Message("user", "q1"),
        Message("system", "Note"),
        Message("user", "q2"),
    ]
    text = fmt.render(msgs)
    assert text.index("q1") < text.index("Note") < text.index("q2")
    assert fmt.render([*msgs, Message("assistant", "a"), Message("system", "N2"), Message("user", "q3")])


def test_stops_per_family():
    assert FORMATS["starchat"].stop_tokens == ("<|end|>",)
    assert FORMATS["chatml"].stop_tokens == ("<|im_end|>",)
    assert FORMATS["starcoder2-instruct"].stop_tokens == ("<|endoftext|>",)
    assert FORMATS["starcoder2-instruct"].stop_texts == ("###",)
    assert FORMATS["starchat"].strip_leading_newline
    assert StarChatFormat().clean_reply("\nhello") == "hello"


def test_catalog_names_and_formats():
    assert set(CATALOG) == {
        "starchat-alpha",
        "starchat-beta",
        "starchat2",
        "starcoder2-instruct",
        "starcoder2-3b",
        "starcoder2-7b",
        "starcoder2-15b",
        "demo",
    }
    assert CATALOG["starchat-alpha"].prompt_format == "starchat"
    assert CATALOG["starchat-beta"].llama_arch == "starcoder"
    assert CATALOG["starcoder2-instruct"].prompt_format == "starcoder2-instruct"
    assert CATALOG["starchat2"].prebuilt.filename("Q4_K_M") == "starchat2-15b-v0.1-Q4_K_M.gguf"
    for spec in CATALOG.values():
        assert spec.prompt_format in FORMATS


def test_jinja_template_from_gguf_renders_like_chatml():
    template = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
        " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    fmt = JinjaFormat(template=template)
    assert fmt.render(CONVERSATION) == ChatMLFormat().render(CONVERSATION)


def test_jinja_template_errors_are_one_line_errors():
    from starchat_cli.core.errors import ModelLoadError

    fmt = JinjaFormat(template="{{ raise_exception('no system role') }}")
    with pytest.raises(ModelLoadError, match="no system role"):
        fmt.render([Message("user", "x")])


def test_unknown_format_name():
    from starchat_cli.core.errors import StarchatError

    with pytest.raises(StarchatError, match="chatml"):
        get_format("alpaca")


def test_jinja_template_that_does_not_parse():
    from starchat_cli.core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not parse"):
        JinjaFormat(template="{% for m in %}").render([Message("user", "x")])
