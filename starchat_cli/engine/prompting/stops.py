"""Plain-text stop sequences in a token stream.

A stop such as ``###`` may arrive split over several chunks (``#`` then ``##``). The
filter holds back any tail of the text that could still become a stop, releases it as
soon as it cannot, and cuts the output cleanly at the first complete stop.
"""

from __future__ import annotations

from typing import Iterator, Sequence


class StopTextFilter:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Add streamed text; return the part that is safe to show now."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._pending + text
        # A complete stop: cut at the earliest one.
        first = -1
        for stop in self.stops:
            pos = buf.find(stop)
            if pos != -1 and (first == -1 or pos < first):
                first, self.matched = pos, stop
        if first != -1:
            self.stopped = True
            self._pending = ""
            return buf[:first]
        # Hold back the longest tail that is a proper prefix of some stop.
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:n]):
                    hold = n
                    break
        if hold:
            self._pending = buf[-hold:]
            return buf[:-hold]
        self._pending = ""
        return buf

    def flush(self) -> str:
        """The stream ended without a stop: release whatever was held back."""
        out, self._pending = self._pending, ""
        return "" if self.stopped else out


def without_trailing_whitespace(chunks: Iterator[str]) -> Iterator[str]:
    """The stream with the reply's trailing whitespace removed (held back until text follows it).

    Closing this generator closes ``chunks`` (a cancelled reply stops the engine).
    """
    held = ""
    try:
        for chunk in chunks:
            text = held + chunk
            body = text.rstrip()
            held = text[len(body) :]
            if body:
                yield body
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
