"""A fake implementation of the Engine contract (:mod:`starchat_cli.engine.contract`).

Used by the TUI, conversation and server tests: it answers instantly and
deterministically, one chunk per word, so a test sees exactly what the UI did with it.

    engine = FakeEngine("Hello **world**")
    engine = FakeEngine(lambda turns: "echo: " + turns[-1].content)
    engine = FakeEngine("a b c d", hold_after=2)   # blocks after 2 chunks until engine.release is set
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, Iterator, Sequence

from starchat_cli.core.errors import InputError
from starchat_cli.engine.contract import EngineInfo, Generation, Stats, StopReason
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.fit import FitResult
from starchat_cli.engine.prompting.formats import Message

FAKE_BOS, FAKE_BOS_ID = "<s>", 256  # the fake tokenizer's one special token (bytes are 0-255)

Reply = str | Callable[[Sequence[Message]], str]


def split_chunks(text: str) -> list[str]:
    """One chunk per word (with its trailing spaces/newlines): roughly one per token."""
    return re.findall(r"\s*\S+\s*|\s+", text)


class FakeGeneration(Generation):
    """The real Generation over fake chunks (no prompt was fitted)."""

    def __init__(self, chunks: Iterator[str], stats: Stats) -> None:
        super().__init__(chunks, stats, FitResult(tokens=[], messages=[]))


class FakeEngine:
    """Replies with ``reply`` (text, or a function of the turns), chunk by chunk.

    ``n_ctx``: context size; a conversation over ``n_ctx - reserve`` estimated tokens
    (4 characters each) drops its oldest turn pairs, reported in ``stats.dropped_turns``
    as the real engine does. ``hold_after``: block after that many chunks until
    ``release`` is set (for stop tests, without any sleeps). ``pace``: emit at most that
    many chunks per second (benchmarks); by default as fast as they are taken.
    """

    def __init__(
        self,
        reply: Reply = "Hello from the fake model.",
        *,
        n_ctx: int = 2048,
        reserve: int = 256,
        hold_after: int | None = None,
        chunks: list[str] | None = None,
        tokens_per_second: float = 1000.0,
        pace: float | None = None,
        name: str = "fake",
    ) -> None:
        self.reply = reply
        self.n_ctx = n_ctx
        self.reserve = reserve
        self.hold_after = hold_after
        self.fixed_chunks = chunks
        self.release = threading.Event()
        self.started = threading.Event()  # set when a generation has produced its first chunk
        self.held = threading.Event()  # set while a generation waits on ``release``
        self.calls: list[tuple[list[Message], str | None]] = []
        self.tps = tokens_per_second
        self.pace = pace  # chunks per second to emit at most; None: as fast as the consumer takes them
        self.default_system: str | None = None
        self.name = name
        self.loads = 0  # how many times load() was called
        self.persists = 0  # how many times persist() was called
        self.closed = False  # close() was called (a chat that switched away from it)
        self.infill_calls: list[tuple[str, str, list[tuple[str, str]], str | None]] = []

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            location="fake",
            loaded=True,  # nothing to load: the app need not preload it
            n_ctx=self.n_ctx,
            prompt_format="fake",
            placement="in the test",
            default_system=self.default_system,
        )

    def close(self) -> None:
        self.closed = True

    def persist(self) -> None:
        self.persists += 1

    def load(self) -> EngineInfo:
        self.loads += 1
        return self.info

    @staticmethod
    def count(text: str) -> int:
        return len(text) // 4 + 4

    def generate(
        self,
        turns: Sequence[Message],
        params: GenerationParams | None = None,
        *,
        system: str | None = None,
        **_: object,
    ) -> FakeGeneration:
        turns = list(turns)
        self.calls.append((turns, system))
        budget = self.n_ctx - self.reserve
        dropped = 0
        kept = turns
        sys_tokens = self.count(system) if system else 0
        while len(kept) > 1 and sys_tokens + sum(self.count(m.content) for m in kept) > budget:
            kept = kept[2:]
            dropped += 1
        stats = Stats(n_ctx=self.n_ctx, dropped_turns=dropped)
        stats.prompt_tokens = sys_tokens + sum(self.count(m.content) for m in kept)
        text = self.reply(kept) if callable(self.reply) else self.reply
        chunks = list(self.fixed_chunks) if self.fixed_chunks is not None else split_chunks(text)
        limit = params.max_tokens if params is not None else None
        return FakeGeneration(self._run(chunks, stats, limit), stats)

    def complete(
        self, prompt: str | Sequence[int], params: GenerationParams | None = None, *, cancel: object = None
    ) -> FakeGeneration:
        """The raw path: the reply (a function of one user turn holding the prompt), chunk by chunk;
        token ids stand as their numbers, space-separated."""
        text = prompt if isinstance(prompt, str) else " ".join(str(t) for t in prompt)
        return self.generate([Message("user", text)], params)

    def count_tokens(self, messages: Sequence[Message]) -> None:
        """No tokenizer here: the faces estimate, as for a remote server."""
        return None

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """A byte tokenizer: each UTF-8 byte is its own id, and ``<s>`` (id 256) is the one special
        token (read as such with ``parse_special``, prepended with ``add_special``)."""
        parts = text.split(FAKE_BOS) if parse_special else [text]
        ids: list[int] = [FAKE_BOS_ID] if add_special else []
        for i, part in enumerate(parts):
            ids += ([FAKE_BOS_ID] if i else []) + list(part.encode())
        return ids

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes]:
        bad = next((t for t in tokens if not 0 <= t <= FAKE_BOS_ID), None)
        if bad is not None:
            raise InputError(f"token id {bad} is not in the vocabulary (0 to {FAKE_BOS_ID})")
        return [FAKE_BOS.encode() if t == FAKE_BOS_ID else bytes([t]) for t in tokens]

    def infill(
        self,
        prefix: str,
        suffix: str,
        params: GenerationParams | None = None,
        *,
        extra: Sequence[tuple[str, str]] = (),
        path: str | None = None,
        repo: str | None = None,
        cancel: object = None,
    ) -> FakeGeneration:
        """FIM: the reply (a function of one user turn holding ``<fim_prefix>…<fim_middle>``), chunk by chunk.

        Every call is recorded in ``infill_calls``; ``prompt_text`` is a StarCoder-style prompt.
        """
        self.infill_calls.append((prefix, suffix, list(extra), path))
        text = f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
        gen = self.generate([Message("user", text)], params)
        gen.prompt_text = text
        return gen

    def _run(self, chunks: list[str], stats: Stats, limit: int | None) -> Iterator[str]:
        start = time.perf_counter()
        try:
            for i, chunk in enumerate(chunks):
                if self.pace:
                    wait = start + i / self.pace - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                if self.hold_after is not None and i == self.hold_after:
                    self.held.set()
                    self.release.wait()
                stats.generated_tokens += 1
                stats.decode_seconds = (stats.generated_tokens - 1) / self.tps
                if i == 0:
                    self.started.set()
                yield chunk
                if limit is not None and stats.generated_tokens >= limit:
                    stats.stop_reason = StopReason.LENGTH
                    return
            stats.stop_reason = StopReason.STOP
        finally:
            if not stats.stop_reason:
                stats.stop_reason = StopReason.CANCELLED


__all__ = ["FakeEngine", "FakeGeneration", "split_chunks"]
