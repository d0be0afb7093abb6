"""The thread-to-asyncio bridge: generations block, so they run in worker threads.

A :class:`Bridge` runs each generation in a thread (the engine's lock queues them on
the one model) and hands the result to the event loop: whole (:meth:`Bridge.run_blocking`)
or chunk by chunk (:meth:`Bridge.stream_chunks`). It counts generations in flight,
completed and cancelled for ``/health``, and owns the ``shutting_down`` event that ends
every running generation at its next token.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from starchat_cli.engine.contract import Generation, StopReason, TokenLogprob

Start = Callable[[], Generation]  # starts a generation (engine.generate or engine.complete)

_END = object()  # the worker thread is done: nothing more will be queued


@dataclass(frozen=True)
class Piece:
    """A text chunk with the logprob entries of its tokens (a stream that asked for logprobs)."""

    text: str
    logprobs: list[TokenLogprob]


class Bridge:
    """Runs generations off the event loop, counting them; one per app."""

    def __init__(self, after: Callable[[], None] | None = None) -> None:
        """``after``: run in a worker thread once each reply has been handed over in full
        (the engine's ``persist``: the prompt cache is written without delaying a reply)."""
        self.after = after
        self.shutting_down = threading.Event()
        self._counts = {"in_flight": 0, "completed": 0, "cancelled": 0}
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        """A snapshot: generations ``in_flight``, ``completed`` and ``cancelled`` so far."""
        with self._lock:
            return dict(self._counts)

    def _count(self, key: str, delta: int = 1) -> None:
        with self._lock:
            self._counts[key] += delta

    def _finished(self, gen: Generation) -> None:
        self._count("cancelled" if gen.stats.stop_reason is StopReason.CANCELLED else "completed")

    async def run_blocking(self, start: Start) -> tuple[str, Generation]:
        """Generate a whole reply in a worker thread (queued on the engine's lock)."""

        def work() -> tuple[str, Generation]:
            self._count("in_flight")
            try:
                gen = start()
                try:
                    parts = []
                    for chunk in gen:
                        parts.append(chunk)
                        if self.shutting_down.is_set():
                            break
                    return "".join(parts), gen
                finally:
                    gen.close()
                    self._finished(gen)
            finally:
                self._count("in_flight", -1)

        result = await asyncio.to_thread(work)
        self._run_after(in_thread=True)
        return result

    def _run_after(self, in_thread: bool) -> None:
        if self.after is None or self.shutting_down.is_set():
            return
        if in_thread:
            threading.Thread(target=self._after_quietly, name="starchat-persist", daemon=True).start()
        else:
            self._after_quietly()

    def _after_quietly(self) -> None:
        try:
            self.after()  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - a failed cache write never breaks serving
            pass

    def stream_chunks(
        self, start: Start, *, logprobs: bool = False
    ) -> tuple[AsyncIterator[Any], threading.Event]:
        """Run a generation in a thread and hand its chunks to the event loop as they come.

        The iterator yields text chunks, then the finished :class:`Generation`; an error
        in the thread is raised from it. Setting the returned event (or closing the
        iterator) stops the generation at its next token. With ``logprobs`` each chunk is
        a :class:`Piece` carrying its tokens' entries (the last one may have no text).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            gen = None
            self._count("in_flight")
            try:
                gen = start()
                for chunk in gen:
                    put(Piece(chunk, gen.take_logprobs()) if logprobs else chunk)
                    if cancel.is_set() or self.shutting_down.is_set():
                        break
                gen.close()
                rest = gen.take_logprobs() if logprobs else []
                if rest:  # tokens with no text of their own (held back, then cut by a stop)
                    put(Piece("", rest))
                put(gen)
            except BaseException as exc:  # handed to the event loop, raised there
                if gen is not None:
                    gen.close()
                put(exc)
            finally:
                if gen is not None:
                    self._finished(gen)
                self._count("in_flight", -1)
                put(_END)
            self._run_after(in_thread=False)  # the client has the whole reply already

        threading.Thread(target=work, name="starchat-generate", daemon=True).start()

        async def items() -> AsyncIterator[Any]:
            try:
                while True:
                    item = await queue.get()
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancel.set()  # the client went away, or we are done: stop generating

        return items(), cancel


__all__ = ["Bridge", "Piece", "Start"]
