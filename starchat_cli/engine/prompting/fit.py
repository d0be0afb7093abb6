"""Fitting a conversation into the context window without ever truncating silently.

In order: drop the oldest user/assistant turn pairs (the system prompt and the latest
turn always stay), then cut attached input (piped text) from the front, keeping its
newest part and starting at a line boundary. When even the latest turn alone does not
fit, that is an error the user must act on. What was dropped is reported in the result
so the face can say so.
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
    if not turns or turns[-1].role != "user":
        raise ValueError("the conversation must end with a user turn")
    if attachment is not None and attach is None:
        raise ValueError("attachment needs attach()")

    def messages_for(start: int, cut: int) -> list[Message]:
        kept = turns[start:]
        if attachment is not None and attach is not None:
            kept = [*kept[:-1], replace(kept[-1], content=attach(attachment[cut:]))]
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
    pairs = (len(turns) - 1) // 2
    last_start = 2 * pairs
    if pairs and fits(last_start, 0):
        dropped = _first_true(0, pairs, lambda n: fits(2 * n, 0))
        return FitResult(
            tokens_for(2 * dropped, 0),
            messages_for(2 * dropped, 0),
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
