"""The terminal side of ``starchat edit``: the diff (coloured for the eye, byte for byte for
``git apply``), the ``Apply? [y/N]`` question, and the token counter.

    show_diff(plan.diff(), sys.stdout)   # coloured when the stream is a terminal
    write_patch(plan.patch(), diff)      # --diff: the bytes that apply to the file on disk
    if ask("Apply?"): ...                # Ctrl-D, Ctrl-C or a terminal that went away: a no
"""

from __future__ import annotations

import os
import stat
import sys

import typer


def color_diff(diff: str) -> str:
    out = []
    for line in diff.splitlines(keepends=True):
        body, end = (line[:-1], "\n") if line.endswith("\n") else (line, "")
        if line.startswith(("+++", "---")):
            out.append(f"\x1b[1m{body}\x1b[0m{end}")
        elif line.startswith("+"):
            out.append(f"\x1b[32m{body}\x1b[0m{end}")
        elif line.startswith("-"):
            out.append(f"\x1b[31m{body}\x1b[0m{end}")
        elif line.startswith("@@"):
            out.append(f"\x1b[36m{body}\x1b[0m{end}")
        else:
            out.append(line)
    return "".join(out)


def show_diff(diff: str, stream) -> None:
    color = os.environ.get("NO_COLOR") is None and os.environ.get("TERM") != "dumb"
    try:
        color = color and stream.isatty()
    except (AttributeError, ValueError):
        color = False
    stream.write(color_diff(diff) if color else diff)
    if diff and not diff.endswith("\n"):
        stream.write("\n")
    stream.flush()


def ask(question: str) -> bool:
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


def write_patch(patch: bytes, diff: str) -> None:
    """``patch`` on stdout byte for byte (the file's own line endings and encoding: what
    ``git apply`` needs); on a terminal, the text ``diff`` coloured instead, for the eye."""
    try:
        on_terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):
        on_terminal = False
    if on_terminal:
        show_diff(diff, sys.stdout)
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(patch)
    sys.stdout.buffer.flush()


class Progress:
    """A token counter on stderr while the rewrite is generated (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False

    def __call__(self, _chunk: str, stats) -> None:
        if self.enabled and stats.generated_tokens % 8 == 0:
            sys.stderr.write(f"\r  {stats.generated_tokens} tokens…")
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


__all__ = ["Progress", "ask", "color_diff", "if_terminal_gone", "show_diff", "write_patch"]
