"""The engine's per-token logprobs (:class:`~starchat_cli.engine.contract.TokenLogprob`) in the APIs' shapes.

chat_logprobs(entries)          # {"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal": None}
TextLogprobs(offset).add(entries)   # legacy completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
token_entries(entries)          # Ollama's "logprobs": the chat entries' list
native_probabilities(entries)   # llama.cpp's "completion_probabilities" (n_probs on /completion, /infill)
"""

from __future__ import annotations

from typing import Any, Sequence

from starchat_cli.engine.contract import TokenLogprob


def _entry(e: TokenLogprob) -> dict[str, Any]:
    return {"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes)}


def token_entries(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """OpenAI chat's ``logprobs.content`` items (also Ollama's ``logprobs``)."""
    return [{**_entry(e), "top_logprobs": [_entry(t) for t in e.top]} for e in entries]


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": token_entries(entries), "refusal": None}


def native_probabilities(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """llama.cpp's ``completion_probabilities``: each token with its id, and ``top_logprobs`` theirs."""
    return [
        {"id": e.id, **_entry(e), "top_logprobs": [{"id": t.id, **_entry(t)} for t in e.top]} for e in entries
    ]


class TextLogprobs:
    """Legacy completions' logprobs of one choice; ``text_offset`` counts characters from ``offset``
    (the echoed prompt's length, else 0) and runs on across a stream's chunks."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def add(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        """The shape for ``entries``, the tokens following those given before."""
        out: dict[str, list[Any]] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }
        for e in entries:
            out["tokens"].append(e.token)
            out["token_logprobs"].append(e.logprob)
            out["top_logprobs"].append({t.token: t.logprob for t in e.top})
            out["text_offset"].append(self.offset)
            self.offset += len(e.token)
        return out


__all__ = ["TextLogprobs", "chat_logprobs", "native_probabilities", "token_entries"]
