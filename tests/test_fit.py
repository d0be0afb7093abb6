"""Fitting prompts into the context: drop old turns, cut piped input from the front, or refuse.

A character-level "tokenizer" keeps the arithmetic visible; the real tokenizer is
exercised by the end-to-end tests.
"""

from __future__ import annotations

import pytest

from starchat_cli.core.errors import ContextOverflowError
from starchat_cli.engine.prompting.fit import fit_prompt
from starchat_cli.engine.prompting.formats import ChatMLFormat, Message

FMT = ChatMLFormat()


def render(msgs):
    return list(FMT.render(msgs).encode())  # one "token" per byte


def build(turns, system):
    return ([Message("system", system)] if system else []) + list(turns)


def turns_of(n_pairs, size=100):
    out = []
    for i in range(n_pairs):
        out += [Message("user", f"q{i}" + "x" * size), Message("assistant", f"a{i}" + "y" * size)]
    return out + [Message("user", "latest question")]


def test_everything_fits():
    res = fit_prompt(render, build, turns_of(2), "sys", 10_000)
    assert res.dropped_turns == 0 and res.truncated_chars == 0
    assert len(res.messages) == 6


def test_oldest_turns_are_dropped_first_and_no_more_than_needed():
    turns = turns_of(5)
    full = len(render(build(turns, "sys")))
    budget = full - 150  # forces out one pair (each pair is ~ 250 bytes), not two
    res = fit_prompt(render, build, turns, "sys", budget)
    assert res.dropped_turns == 1
    assert res.messages[0] == Message("system", "sys")
    assert res.messages[1].content.startswith("q1")
    assert res.messages[-1].content == "latest question"
    assert len(res.tokens) <= budget


def test_attachment_is_cut_from_the_front_at_a_line_boundary():
    lines = [f"line {i:04d}" for i in range(1000)]
    text = "\n".join(lines) + "\n"

    def attach(kept):
        return f"```\n{kept}```\n\nwhat is the last line?"

    res = fit_prompt(
        render, build, [Message("user", attach(text))], None, 2000, attachment=text, attach=attach
    )
    assert len(res.tokens) <= 2000
    assert res.truncated_chars > 0
    kept = text[res.truncated_chars :]
    assert kept.startswith("line ") and text.endswith(kept)  # the newest lines are kept, whole
    assert "line 0999" in res.messages[-1].content
    assert "line 0000" not in res.messages[-1].content


def test_question_that_cannot_fit_is_refused():
    with pytest.raises(ContextOverflowError, match="needs .* tokens but only 50 fit"):
        fit_prompt(render, build, [Message("user", "z" * 500)], None, 50)


def test_question_plus_attachment_refused_when_the_question_alone_overflows():
    def attach(kept):
        return kept + "\n\n" + "q" * 500

    with pytest.raises(ContextOverflowError, match="the question needs"):
        fit_prompt(render, build, [Message("user", "")], None, 100, attachment="a\nb\n", attach=attach)


def test_turn_order_is_checked():
    with pytest.raises(ValueError):
        fit_prompt(render, build, [Message("assistant", "x")], None, 100)
