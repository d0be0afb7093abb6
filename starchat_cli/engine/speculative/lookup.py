"""The proposer of drafted decoding: prompt lookup, no model and no llama.cpp involved.

    drafter = NgramDrafter(prompt_tokens, prediction_tokens)
    drafter.append(token)          # each token of the reply as it comes
    draft = drafter.propose(k)     # up to k tokens that followed the longest recent n-gram

:class:`NgramDrafter` proposes the tokens that followed the longest recent n-gram of the
context (prompt + reply so far, plus an optional ``prediction`` such as the file under edit)
that occurred earlier. The index grows by one entry per n per token, so a proposal is a few
dict lookups, never a rescan of the context. How many to draft is :mod:`.policy`'s call.
"""

from __future__ import annotations

from typing import Sequence

MAX_N = 4  # longest n-gram looked up
MIN_N = 2  # shortest: single tokens repeat too often to predict what follows


class NgramDrafter:
    """An incremental n-gram index over the context and an optional static source.

    ``propose(k)`` looks for the suffix of the context, longest n first (MAX_N down to MIN_N),
    among earlier n-grams of the context (its most recent occurrence) and then of the static
    source (``prediction``), and returns up to ``k`` tokens that followed it.
    """

    def __init__(
        self,
        context: Sequence[int],
        source: Sequence[int] = (),
        max_n: int = MAX_N,
        min_n: int = MIN_N,
    ) -> None:
        self.max_n, self.min_n = max_n, min_n
        self.tokens: list[int] = []
        # n -> n-gram -> end (exclusive) of its most recent occurrence that has a follower
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_n, max_n + 1)}
        self._source = list(source)
        self._source_index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_n, max_n + 1)}
        for end in range(1, len(self._source)):  # the first occurrence wins in a static source
            for n in range(min_n, max_n + 1):
                if end >= n:
                    self._source_index[n].setdefault(tuple(self._source[end - n : end]), end)
        self.extend(context)

    def append(self, token: int) -> None:
        toks = self.tokens
        end = len(toks)  # n-grams ending here now have a follower: index them
        for n in range(self.min_n, self.max_n + 1):
            if end >= n:
                self._index[n][tuple(toks[end - n : end])] = end
        toks.append(int(token))

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            self.append(token)

    def propose(self, k: int) -> list[int]:
        if k <= 0:
            return []
        toks = self.tokens
        size = len(toks)
        for n in range(min(self.max_n, size), self.min_n - 1, -1):
            key = tuple(toks[size - n :])
            end = self._index[n].get(key)
            if end is not None:
                return toks[end : end + k]
            end = self._source_index[n].get(key)
            if end is not None:
                return self._source[end : end + k]
        return []


__all__ = ["MAX_N", "MIN_N", "NgramDrafter"]
