"""The message layouts real clients send, folded per prompt format, checked on the exact bytes.

An assistant prefill is continued with no end-of-turn; a system message after the first turn
(aider's trailing reminder) stays in place in ChatML and goes into the user turns of the
formats that have no system turn there. The engine returns the prompt it built
(``Generation.prompt_text``), in process and through a worker; token-id prompts are evaluated
as given; ``context_tokens`` counts what llama.cpp's server calls ``tokens_cached``.
"""

from __future__ import annotations

import pytest

from starchat_cli.core.errors import InputError
from starchat_cli.engine.contract import StopReason
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import (
    STARCODER2_INSTRUCT_PREAMBLE,
    ChatMLFormat,
    JinjaFormat,
    Message,
    StarChatFormat,
    StarCoder2InstructFormat,
)

S, U, A, N = Message("system", "S"), Message("user", "U1"), Message("assistant", "A1"), Message("system", "N")
U2 = Message("user", "U2")
AIDER = [S, U, A, U2, Message("system", "R")]  # aider's trailing system reminder
FENCE = Message("assistant", "```python\n")  # a coding client's prefill
SC2 = f"<|endoftext|>{STARCODER2_INSTRUCT_PREAMBLE}\n\n"
GREEDY = GenerationParams(temperature=0, max_tokens=12)


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (
            StarChatFormat(),
            "<|system|>\nS<|end|>\n<|user|>\nU1<|end|>\n<|assistant|>\nA1<|end|>\n"
            "<|user|>\nU2\n\nR<|end|>\n<|assistant|>\n",
        ),
        (
            ChatMLFormat(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
            "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
            "<|im_start|>system\nR<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            StarCoder2InstructFormat(),
            f"{SC2}### Instruction\nS\n\nU1\n\n### Response\nA1<|endoftext|>\n\n"
            "### Instruction\nU2\n\nR\n\n### Response\n",
        ),
    ],
    ids=["starchat", "chatml", "starcoder2-instruct"],
)
def test_a_trailing_system_reminder_per_format(fmt, expected):
    assert fmt.prompt(AIDER) == expected


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (
            StarChatFormat(),
            "<|system|>\nS<|end|>\n<|user|>\nU1<|end|>\n<|assistant|>\nA1<|end|>\n"
            "<|user|>\nN\n\nU2<|end|>\n<|assistant|>\n",
        ),
        (
            ChatMLFormat(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
            "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>system\nN<|im_end|>\n"
            "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            StarCoder2InstructFormat(),
            f"{SC2}### Instruction\nS\n\nU1\n\n### Response\nA1<|endoftext|>\n\n"
            "### Instruction\nN\n\nU2\n\n### Response\n",
        ),
    ],
    ids=["starchat", "chatml", "starcoder2-instruct"],
)
def test_a_system_note_before_a_user_turn_goes_into_that_turn_or_stays(fmt, expected):
    assert fmt.prompt([S, U, A, N, U2]) == expected


def test_a_note_after_an_assistant_turn_with_no_user_after_it_is_a_user_turn_of_its_own():
    assert (
        StarChatFormat()
        .prompt([U, A, N])
        .endswith("<|assistant|>\nA1<|end|>\n<|user|>\nN<|end|>\n<|assistant|>\n")
    )
    assert (
        StarCoder2InstructFormat()
        .prompt([U, A, N])
        .endswith("### Response\nA1<|endoftext|>\n\n### Instruction\nN\n\n### Response\n")
    )
    assert (
        ChatMLFormat()
        .prompt([U, A, N])
        .endswith(
            "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>system\nN<|im_end|>\n<|im_start|>assistant\n"
        )
    )


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (StarChatFormat(), "<|system|>\nS<|end|>\n<|user|>\nU1<|end|>\n<|assistant|>\n```python\n"),
        (
            ChatMLFormat(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n```python\n",
        ),
        (StarCoder2InstructFormat(), f"{SC2}### Instruction\nS\n\nU1\n\n### Response\n```python\n"),
    ],
    ids=["starchat", "chatml", "starcoder2-instruct"],
)
def test_an_assistant_prefill_is_left_open(fmt, expected):
    """The prefill follows the generation prompt with no end-of-turn token after it."""
    assert fmt.prompt([S, U, FENCE]) == expected
    assert fmt.prompt([S, U, Message("assistant", "")]) == fmt.prompt([S, U])  # nothing to continue


def test_a_prefill_after_a_note():
    assert StarChatFormat().prompt([U, N, FENCE]) == (
        "<|system|>\n<|end|>\n<|user|>\nU1\n\nN<|end|>\n<|assistant|>\n```python\n"
    )
    assert ChatMLFormat().prompt([U, N, FENCE]) == (
        "<|im_start|>user\nU1<|im_end|>\n<|im_start|>system\nN<|im_end|>\n<|im_start|>assistant\n```python\n"
    )


def test_two_user_turns_in_a_row_are_still_refused_where_no_note_joins_them():
    for fmt in (StarChatFormat(), ChatMLFormat(), StarCoder2InstructFormat()):
        with pytest.raises(ValueError, match="alternate"):
            fmt.prompt([U, U2])
        with pytest.raises(ValueError, match="starting with a user turn"):
            fmt.prompt([S, A, U])


CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that allows a system message only first (as many do): the notes are folded instead.
STRICT_JINJA = (
    "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('System role only at the start') }}{% endif %}"
    "[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_a_gguf_template_gets_notes_in_place_or_folded_when_it_refuses_them():
    assert JinjaFormat(template=CHATML_JINJA).prompt(AIDER) == ChatMLFormat().prompt(AIDER)
    strict = JinjaFormat(template=STRICT_JINJA)
    assert strict.prompt(AIDER) == "[system]S\n[user]U1\n[assistant]A1\n[user]U2\n\nR\n[assistant]"
    assert strict.prompt([S, U, FENCE]) == "[system]S\n[user]U1\n[assistant]```python\n"


# --- the engine: the prompt it built, prefills continued, token ids, the context it holds -------


def test_the_engine_returns_its_prompt_and_continues_a_prefill(demo_engine):
    """Greedy: a prefilled reply is exactly what raw completion of the same prompt text gives."""
    turns = [Message("user", "Write a Python function that adds two numbers."), FENCE]
    gen = demo_engine.generate(turns, GREEDY, system="S")
    text = "".join(gen)
    assert gen.prompt_text == ChatMLFormat().prompt([S, *turns])
    assert gen.prompt_text.endswith("<|im_start|>assistant\n```python\n")
    raw = demo_engine.complete(gen.prompt_text, GREEDY)
    assert text == "".join(raw) and text and not text.startswith("```python")
    assert gen.stats.prompt_tokens == raw.stats.prompt_tokens


def test_a_prefill_keeps_the_first_newline_of_its_continuation(demo_backend):
    """StarChat's format strips a reply's leading newline, but a continuation's is part of the text."""
    from starchat_cli.engine.llamacpp.engine import LocalEngine

    engine = LocalEngine(demo_backend, StarChatFormat(), None)
    turns = [Message("user", "Print hello in Python, in a code block."), Message("assistant", "```python")]
    gen = engine.generate(turns, GREEDY)
    text = "".join(gen)
    assert gen.prompt_text.endswith("<|assistant|>\n```python")
    assert text == "".join(engine.complete(gen.prompt_text, GREEDY))
    fresh = engine.generate(turns[:1], GREEDY)
    assert not "".join(fresh).startswith("\n")  # a fresh reply still loses it


def test_a_trailing_note_reaches_the_model_as_the_format_places_it(demo_engine):
    turns = [U, A, U2, Message("system", "R")]
    gen = demo_engine.generate(turns, GREEDY, system="S")
    text = "".join(gen)
    assert gen.prompt_text == ChatMLFormat().prompt(AIDER)
    assert text == "".join(demo_engine.complete(gen.prompt_text, GREEDY))


def test_token_id_prompts_are_evaluated_as_given(demo_engine, demo_backend):
    ids = demo_backend.tokenize("def add(a, b):\n")
    by_text = demo_engine.complete("def add(a, b):\n", GREEDY)
    by_ids = demo_engine.complete(ids, GREEDY)
    assert "".join(by_ids) == "".join(by_text) and by_ids.stats.prompt_tokens == len(ids)
    n_vocab = demo_backend.n_vocab
    with pytest.raises(InputError, match=f"prompt token 1 is {n_vocab}, outside the vocabulary"):
        demo_engine.complete([ids[0], n_vocab], GREEDY)


def test_context_tokens_leave_out_the_last_token_unless_it_was_fed_back(demo_engine):
    """llama.cpp's tokens_cached: the prompt and the reply tokens decoded into the context."""
    gen = demo_engine.complete("1, 2, 3, 4,", GenerationParams(temperature=0, max_tokens=3))
    list(gen)
    st = gen.stats
    assert st.stop_reason is StopReason.LENGTH and st.generated_tokens == 3
    assert st.context_tokens == st.prompt_tokens + 2  # the third token was sampled, never decoded
    short = demo_engine.generate(
        [Message("user", "Say only: ok")], GenerationParams(temperature=0, max_tokens=40)
    )
    list(short)
    assert short.stats.stop_reason is StopReason.STOP  # ended on <|im_end|>: every reply token was fed back
    assert short.stats.context_tokens == short.stats.prompt_tokens + short.stats.generated_tokens


def test_layouts_token_ids_and_context_tokens_through_a_worker(demo_gguf, demo_backend):
    """What the server's engine returns travels through the worker protocol too."""
    from starchat_cli.engine.worker.client import WorkerEngine
    from starchat_cli.models.store import Store
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import engine_spec

    settings = Settings(ctx=1024, prompt_cache=0, draft="off")
    engine = WorkerEngine(engine_spec(Store().resolve("demo"), settings), keep_alive=0)
    short = GenerationParams(temperature=0, max_tokens=4)
    try:
        turns = [Message("user", "Add two numbers in Python."), N, FENCE]
        gen = engine.generate(turns, short, system="S")
        text = "".join(gen)
        assert gen.prompt_text == ChatMLFormat().prompt([S, *turns])
        assert text and not text.startswith("```")
        ids = demo_backend.tokenize("1, 2, 3, 4,")
        by_ids = engine.complete(ids, short)
        assert "".join(by_ids) and by_ids.stats.prompt_tokens == len(ids)
        assert by_ids.stats.context_tokens == len(ids) + 3
        with pytest.raises(InputError, match="outside the vocabulary"):
            list(engine.complete([10**6], short))
    finally:
        engine.close()
