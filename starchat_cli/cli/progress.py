"""Progress of long work on stderr, one helper for every command: rich bars on a terminal;
piped, a plain line per finished task (``lines=True``, for ``pull``) or nothing at all.

    with Progress(lines=True) as bars:
        bars.say("downloading 8.9 GB from ORG/REPO")
        bars.update("model.gguf", done, total)                   # bytes: size, speed, time left
        bars.update("quantize", done, total, unit="tensors")     # a count: 12/291 tensors
        bars.update("rewriting", tokens, None, unit="tokens")    # a counter with no end known
    convert(..., progress=bars.callback("converting", "bytes"))  # None when nothing is shown

rich is imported only when stderr is a terminal.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Callable, Literal

from starchat_cli.cli.terminal import note

Unit = Literal["bytes", "tensors", "tokens"]


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


def _columns() -> list[Any]:
    """Description, bar, amount (bytes with their speed, or N/M units), time left."""
    from rich.progress import DownloadColumn, ProgressColumn, TimeRemainingColumn, TransferSpeedColumn
    from rich.text import Text

    class Amount(ProgressColumn):
        # One column set serves bytes and counts: rich fixes the columns per Progress, not per task.
        def __init__(self) -> None:
            super().__init__()
            self.size, self.speed = DownloadColumn(), TransferSpeedColumn()

        def render(self, task: Any) -> Text:
            unit = task.fields.get("unit", "bytes")
            if unit == "bytes":
                return Text.assemble(self.size.render(task), " ", self.speed.render(task))
            done = int(task.completed)
            return Text(f"{done}/{int(task.total)} {unit}" if task.total else f"{done} {unit}…")

    from rich.progress import BarColumn, TextColumn

    return [TextColumn("{task.description}"), BarColumn(), Amount(), TimeRemainingColumn()]


class Progress:
    """Bars for named tasks on a terminal; when piped, one ``starchat: NAME: …`` line per finished
    task if ``lines``, else silence (a command's piped output stays clean)."""

    def __init__(self, *, lines: bool = False, transient: bool = False) -> None:
        self.tty = _isatty(sys.stderr)
        self.lines = lines
        self.transient = transient
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.console import Console
            from rich.progress import Progress as Bars

            self._bars = Bars(*_columns(), console=Console(stderr=True), transient=self.transient)
            self._bars.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def say(self, text: str) -> None:
        """A line above the bars (on a terminal) or on stderr."""
        if self._bars is not None:
            self._bars.console.print(text, highlight=False, markup=False)
        else:
            note(text)

    def update(self, name: str, done: int, total: int | None, unit: Unit = "bytes") -> None:
        if self._bars is not None:
            if name not in self._tasks:
                self._tasks[name] = self._bars.add_task(name, total=total, completed=done, unit=unit)
            self._bars.update(self._tasks[name], completed=done, total=total)
            return
        self._started.setdefault(name, time.monotonic())
        if self.lines and total is not None and done >= total and name not in self._finished:
            self._finished.add(name)
            seconds = time.monotonic() - self._started[name]
            note(f"{name}: {total:,} {unit} in {seconds:.1f} s")

    def callback(self, name: str, unit: Unit = "bytes") -> Callable[..., None] | None:
        """``(done, total, *details)`` for a converter's progress hook; None when nothing would show."""
        if not (self.tty or self.lines):
            return None
        return lambda done, total, *details: self.update(name, done, total, unit)


__all__ = ["Progress", "Unit"]
