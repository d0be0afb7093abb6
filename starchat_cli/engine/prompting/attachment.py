"""Piped input attached to a question: the fenced block around it, as data an engine can cut to fit.

    a = Attachment(text=piped, question="explain this", language="python")
    a.turn(a.text)          # the user message: the text in a fenced block, then the question
    a.turn(a.text[-500:])   # the same around the part an engine kept (engine/prompting/fit.py)

Plain data rather than a callable, so that it crosses a process boundary (engine/worker/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    return "`" * max(3, longest + 1)


def attach(question: str, context: str, language: str = "", label: str = "") -> str:
    """The user message: the attached text in a fenced block, then the question."""
    fence = fence_for(context)
    body = context if context.endswith("\n") else context + "\n"
    head = f"{label}\n" if label else ""
    block = f"{head}{fence}{language}\n{body}{fence}"
    return f"{block}\n\n{question}" if question else block


@dataclass(frozen=True)
class Attachment:
    """Long input (piped text) that may be cut from the front to fit the context.

    ``question``: asked about it ("" : the text alone is the message); ``language``: its fence's tag.
    """

    text: str
    question: str = ""
    language: str = ""

    def turn(self, kept: str) -> str:
        """The last user message's content around ``kept``, the part of the text kept."""
        return attach(self.question, kept, self.language) if self.question else kept


__all__ = ["Attachment", "attach", "fence_for"]
