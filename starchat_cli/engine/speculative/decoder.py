"""The decoder drafting programs against: the few operations on one sequence's KV cache it needs.

    def run(decoder: Decoder) -> None:
        start = decoder.n_past
        rows = decoder.decode_batch([token, *draft])   # logits at every position
        decoder.truncate(start + 1 + accepted)          # drop the rejected positions

The llama.cpp backend (:class:`~starchat_cli.engine.llamacpp.backend.LlamaCppBackend`) has these
members and so is a ``Decoder`` structurally; nothing in this package imports it, so a test may
hand the drafting code a stand-in, and another backend only needs these seven members to draft.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence


class Decoder(Protocol):
    """One sequence being decoded: positions ``0 .. n_past - 1`` are in the KV cache."""

    @property
    def n_ctx(self) -> int:
        """The context size: positions the KV cache can hold."""
        ...

    @property
    def n_past(self) -> int:
        """Positions evaluated so far."""
        ...

    def sample(self, chain: Any) -> int:
        """The next token from the last evaluated position's logits, drawn by sampler ``chain``."""
        ...

    def decode_one(self, token: int) -> None:
        """Evaluate ``token`` at position ``n_past``."""
        ...

    def decode_batch(self, tokens: Sequence[int]) -> Any:
        """Evaluate ``tokens`` at the end in one batch: a (len(tokens), n_vocab) logits array."""
        ...

    def last_logits(self) -> Any:
        """A copy of the logits after the last evaluated token (a float32 array over the vocabulary)."""
        ...

    def truncate(self, n: int) -> None:
        """Drop positions ``n`` and later from the KV cache."""
        ...


__all__ = ["Decoder"]
