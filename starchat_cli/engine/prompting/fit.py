"""Fitting a conversation into the context window without ever truncating silently.

In order: drop the oldest user/assistant turn pairs (the system prompt and the latest
turn always stay), then cut attached input (piped text) from the front, keeping its
newest part and starting at a line boundary. When even the latest turn alone does not
fit, that is an error the user must act on. What was dropped is reported in the result
so the face can say so.

A pair is a user turn and what follows it up to the next user turn: its reply, and system
notes (formats.py) just before the next user turn belong to that next one. The latest
"turn" is the last user turn with whatever follows it (an assistant prefill, a note).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from starchat_cli.core.errors import ContextOverflowError
from starchat_cli.engine.prompting.formats import Message


@dataclass
class FitResult:
    tokens: list[int]
    messages: list[Message]
    dropped_turns: int = 0  # user/assistant pairs left out from the start of the history
    truncated_chars: int = 0  # characters cut from the front of the attachment
    attachment_chars: int = 0


def _first_true(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The smallest x in [lo, hi] with ok(x), given ok is monotone and ok(hi) holds."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _starts(turns: Sequence[Message]) -> list[int]:
    """Where the kept part of a conversation may begin: at each user turn, with the system
    notes right before it (the first always at 0, so nothing before the first user is lost)."""
    out: list[int] = []
    for i, msg in enumerate(turns):
        if msg.role == "user":
            start = i
            while start > 0 and turns[start - 1].role == "system":
                start -= 1
            out.append(0 if not out else start)
    return out


def fit_prompt(
    render_tokens: Callable[[list[Message]], list[int]],
    build_messages: Callable[[Sequence[Message], str | None], list[Message]],
    turns: list[Message],
    system: str | None,
    budget: int,
    *,
    attachment: str | None = None,
    attach: Callable[[str], str] | None = None,
) -> FitResult:
    starts = _starts(turns)
    if not starts:
        raise ValueError("the conversation needs a user turn")
    if attachment is not None and attach is None:
        raise ValueError("attachment needs attach()")
    last_user = max(i for i, m in enumerate(turns) if m.role == "user")

    def messages_for(start: int, cut: int) -> list[Message]:
        kept = list(turns[start:])
        if attachment is not None and attach is not None:  # the attachment is the last user turn's
            at = last_user - start
            kept[at] = replace(kept[at], content=attach(attachment[cut:]))
        return build_messages(kept, system)

    cache: dict[tuple[int, int], list[int]] = {}

    def tokens_for(start: int, cut: int) -> list[int]:
        key = (start, cut)
        if key not in cache:
            cache[key] = render_tokens(messages_for(start, cut))
        return cache[key]

    def fits(start: int, cut: int) -> bool:
        return len(tokens_for(start, cut)) <= budget

    if fits(0, 0):
        return FitResult(tokens_for(0, 0), messages_for(0, 0), attachment_chars=len(attachment or ""))

    # 1. Drop whole user/assistant pairs from the oldest, as few as needed.
    pairs = len(starts) - 1
    last_start = starts[-1]
    if pairs and fits(last_start, 0):
        dropped = _first_true(0, pairs, lambda n: fits(starts[n], 0))
        return FitResult(
            tokens_for(starts[dropped], 0),
            messages_for(starts[dropped], 0),
            dropped_turns=dropped,
            attachment_chars=len(attachment or ""),
        )

    # 2. Only the latest turn is left: cut the attachment from the front.
    full = len(attachment or "")
    if attachment is None or not fits(last_start, full):
        needed = len(tokens_for(last_start, full))
        what = "the question" if attachment is not None else "the latest message"
        raise ContextOverflowError(
            f"{what} needs {needed} tokens but only {budget} fit in the context window "
            "(after room for the reply): shorten it or raise --ctx"
        )
    cut = _first_true(0, full, lambda c: fits(last_start, c))
    newline = attachment.find("\n", cut)
    if cut and newline != -1 and newline + 1 < full and attachment[cut - 1] != "\n":
        cut = newline + 1  # start the kept part at a whole line
    if cut >= full or not attachment[cut:].strip():
        raise ContextOverflowError(
            f"the attached input ({full:,} characters) does not fit in the context window "
            "next to the question: raise --ctx, or pipe in less (e.g. tail -n 200)"
        )
    return FitResult(
        tokens_for(last_start, cut),
        messages_for(last_start, cut),
        dropped_turns=pairs,
        truncated_chars=cut,
        attachment_chars=full,
    )
