"""The terminal side of the commands: what they read from stdin, what they print and ask.

out = Output(raw=json_out)       # Markdown on a terminal, plain text when piped
note("using demo")               # "starchat: using demo" on stderr: the one way to say a note
out.stream(generation)           # the answer, as it comes
show_diff(diff, sys.stdout)      # coloured (rich) on a terminal, the plain diff otherwise
write_patch(plan.patch(), diff)  # --diff: the bytes that apply to the file on disk
if confirm("Apply?"): ...        # Ctrl-D, Ctrl-C or a terminal that went away: a no
data = read_stdin()              # piped bytes, b"" on a terminal
"""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import IO, Iterable

import typer

from starchat_cli.engine.contract import CacheSource, Stats


def note(message: str) -> None:
    """A line for the user on stderr, prefixed ``starchat:`` (answers go to stdout)."""
    print(f"starchat: {message}", file=sys.stderr, flush=True)


def say_stats(st: Stats) -> None:
    """The --stats line on stderr: tokens, cache, drafts, first token, speed, stop reason."""
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
    note(
        f"{st.prompt_tokens} prompt tokens{cached}, {st.generated_tokens} generated{drafts}; "
        f"first token {st.ttft_seconds:.2f} s{load}; {st.tokens_per_second:.1f} tokens/s; "
        f"stop: {st.stop_reason}"
    )


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
        self.markdown = not raw and self.stdout_tty and os.environ.get("TERM") != "dumb"
        self._ends_with_newline = True

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


# -- diffs ----------------------------------------------------------------------------------

_DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("+", "green"), ("-", "red"), ("@@", "cyan"))


def show_diff(diff: str, stream: IO[str]) -> None:
    """``diff`` on ``stream``: coloured when it is a terminal (and NO_COLOR and TERM=dumb are
    unset), else byte for byte; never wrapped (a wrapped diff line reads as two)."""
    if _isatty(stream) and os.environ.get("NO_COLOR") is None and os.environ.get("TERM") != "dumb":
        from rich.console import Console
        from rich.text import Text

        text = Text(end="")
        for line in diff.splitlines(keepends=True):
            body = line.rstrip("\n")
            style = next((style for head, style in _DIFF_STYLES if line.startswith(head)), "")
            text.append(body, style)
            text.append(line[len(body) :])
        console = Console(file=stream, force_terminal=True, color_system="standard", soft_wrap=True)
        console.print(text, highlight=False, markup=False, emoji=False)
    else:
        stream.write(diff)
    if diff and not diff.endswith("\n"):
        stream.write("\n")
    stream.flush()


def write_patch(patch: bytes, diff: str) -> None:
    """``patch`` on stdout byte for byte (the file's own line endings and encoding: what
    ``git apply`` needs); on a terminal, the text ``diff`` coloured instead, for the eye."""
    if _isatty(sys.stdout):
        show_diff(diff, sys.stdout)
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(patch)
    sys.stdout.buffer.flush()


# -- stdin ----------------------------------------------------------------------------------


def stdin_is_terminal() -> bool:
    """Whether a question can be asked on stdin."""
    return _isatty(sys.stdin)


def read_stdin() -> bytes:
    """Piped input, or b"" when stdin is a terminal or absent."""
    stream = sys.stdin
    if stream is None or stdin_is_terminal():
        return b""
    buffer = getattr(stream, "buffer", None)
    try:
        data = buffer.read() if buffer is not None else stream.read().encode("utf-8")
    except (OSError, ValueError):
        return b""
    return data if isinstance(data, bytes) else data.encode("utf-8")


def confirm(question: str) -> bool:
    """A yes/no question on the terminal; end of input (Ctrl-D), Ctrl-C, or a terminal that went
    away (EIO: its window closed) at the prompt is a no."""
    try:
        return typer.confirm(question, default=False)
    except (typer.Abort, EOFError, OSError):  # readline reports a hang-up as end of input
        if_terminal_gone()
    try:
        print(file=sys.stderr)
    except OSError:
        pass
    return False


def if_terminal_gone() -> None:
    """Point stdout and stderr at /dev/null when they are the terminal stdin was and it is gone
    (hung up: no longer a terminal): every later write to it would fail (EIO), down to the
    error line and the last flush."""
    try:
        if os.isatty(0):
            return  # still there: Ctrl-D or Ctrl-C
        tty = os.fstat(0)
    except OSError:
        return
    if not stat.S_ISCHR(tty.st_mode):
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            st = os.fstat(fd)
        except (AttributeError, ValueError, OSError):
            continue
        if st.st_rdev == tty.st_rdev and st.st_ino == tty.st_ino:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)


__all__ = [
    "Output",
    "confirm",
    "if_terminal_gone",
    "note",
    "read_stdin",
    "say_stats",
    "show_diff",
    "stdin_is_terminal",
    "write_patch",
]
