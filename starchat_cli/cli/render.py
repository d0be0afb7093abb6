"""Terminal output for the CLI: Markdown on a TTY, plain text when piped, notes on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterable, Iterator

from starchat_cli.engine.contract import CacheSource, Stats


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


class Output:
    """Where a command's answer goes: rich Markdown on a terminal, raw text otherwise."""

    # Redraw the block in progress at most this often (seconds): cost per token stays flat.
    REDRAW_EVERY = 0.06

    def __init__(self, raw: bool = False) -> None:
        self.stdout_tty = _isatty(sys.stdout)
        self.stderr_tty = _isatty(sys.stderr)
        self.markdown = not raw and self.stdout_tty and os.environ.get("TERM") != "dumb"
        self._ends_with_newline = True

    # -- stderr ----------------------------------------------------------------------
    def note(self, message: str) -> None:
        print(f"starchat: {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def loading(self, name: str, already_loaded: bool) -> Iterator[None]:
        """A spinner on stderr while the model loads, only when stderr is a terminal."""
        if already_loaded or not self.stderr_tty:
            yield
            return
        from rich.console import Console

        console = Console(stderr=True)
        with console.status(f"loading {name}…", spinner="dots"):
            yield

    def stats(self, st: Stats) -> None:
        where = {CacheSource.DISK: " from the prompt cache", CacheSource.MEMORY: " in memory"}.get(
            st.cached_from, ""
        )
        cached = f" ({st.cached_tokens} cached{where})" if st.cached_tokens else ""
        load = f", load {st.load_seconds:.2f} s" if st.load_seconds else ""
        drafts = (
            f" ({st.accepted_tokens} of {st.drafted_tokens} drafted tokens accepted, {st.decode_steps} steps)"
            if st.drafted_tokens
            else ""
        )
        if st.draft_stopped_at:  # drafting would have changed the text from there on (exact_batches.py)
            drafts += f" (no drafts from context position {st.draft_stopped_at}: batches not exact there)"
        print(
            f"starchat: {st.prompt_tokens} prompt tokens{cached}, {st.generated_tokens} generated{drafts}; "
            f"first token {st.ttft_seconds:.2f} s{load}; {st.tokens_per_second:.1f} tokens/s; "
            f"stop: {st.stop_reason}",
            file=sys.stderr,
            flush=True,
        )

    # -- stdout ----------------------------------------------------------------------
    def write_plain(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            self._ends_with_newline = text.endswith("\n")

    def stream(self, chunks: Iterable[str]) -> None:
        if self.markdown:
            self._stream_markdown(chunks)
            return
        for chunk in chunks:
            self.write_plain(chunk)
        if not self._ends_with_newline:
            self.write_plain("\n")

    def _stream_markdown(self, chunks: Iterable[str]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.markdown import Markdown
        from rich.text import Text

        from starchat_cli.chat.codeblocks import BlockSplitter

        console = Console()
        splitter = BlockSplitter()
        blank = Text("")
        last = 0.0
        live = Live(blank, console=console, auto_refresh=False, transient=True, vertical_overflow="ellipsis")
        with live:
            for chunk in chunks:
                done = splitter.feed(chunk)
                for block in done:
                    console.print(Markdown(block))
                now = time.monotonic()
                if done or now - last >= self.REDRAW_EVERY:
                    pending = splitter.pending
                    live.update(Markdown(pending) if pending.strip() else blank, refresh=True)
                    last = now
            rest = splitter.flush()
            live.update(blank, refresh=True)
        if rest.strip():
            console.print(Markdown(rest))
