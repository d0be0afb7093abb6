"""``starchat pull``: models from the Hugging Face Hub, prebuilt or built here."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:  # rich is imported when a terminal shows the bars
    from rich.progress import Progress, TaskID

PULL_HELP = """\
Download a model from the Hugging Face Hub into its cache and register it.

\b
  starchat pull starchat2                    # the catalog's prebuilt GGUF (Q4_K_M)
  starchat pull starchat2 --quant Q8_0
  starchat pull starchat2 --from-source      # original checkpoint -> convert -> quantize
  starchat pull bartowski/starchat2-15b-v0.1-GGUF:Q5_K_M
  starchat pull hf.co/ORG/REPO:FILE.gguf

Interrupted downloads resume where they stopped; every file is checked against the
Hub's sha256 before it is used. HF_TOKEN (or `hf auth login`) opens gated and private
repos; HF_HOME moves the cache; HF_HUB_OFFLINE=1 uses only what is cached.
"""


def register(app: typer.Typer) -> None:
    app.command("pull", help=PULL_HELP)(pull)


def pull(
    model: str = typer.Argument(
        ..., help="A catalog name, ORG/REPO[:QUANT], or hf.co/ORG/REPO[:QUANT|:FILE]."
    ),
    quant: Optional[str] = typer.Option(
        None, "--quant", "-q", help="Quantization, e.g. Q4_K_M (default), Q5_K_M, Q8_0.", show_default=False
    ),
    from_source: bool = typer.Option(
        False, "--from-source", help="Download the original checkpoint and convert + quantize it here."
    ),
    keep_f16: bool = typer.Option(
        False, "--keep-f16", help="With --from-source: keep the intermediate F16 GGUF."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the files and sizes, download nothing."),
    revision: str = typer.Option("main", "--revision", help="Branch, tag or commit on the Hub."),
) -> None:
    from starchat_cli.cli.signals import terminate_like_ctrl_c

    terminate_like_ctrl_c()
    from starchat_cli.core.errors import ExitCode, StarchatError
    from starchat_cli.core.units import format_bytes
    from starchat_cli.services.pull import dry_run_lines, execute, make_plan, parse_target

    target = parse_target(model, quant, from_source)
    target.revision = revision
    if not dry_run:
        from starchat_cli.core.fsutil import ensure_folder
        from starchat_cli.models.hub import hf_hub_cache

        ensure_folder(hf_hub_cache())  # a cache that cannot be created fails first, by name (exit 12)
    plan = make_plan(target)
    for note in plan.notes:
        print(f"starchat: {note}", file=sys.stderr)
    if dry_run:
        print("\n".join(dry_run_lines(plan)))
        return
    ui = _Progress()
    try:
        with ui:
            if plan.to_fetch:
                ui.say(
                    f"downloading {format_bytes(plan.to_fetch, 'GB', 2)} from {target.repo} ({len(plan.files)} files)"
                )
            entry = execute(
                plan,
                on_file=ui.file,
                on_stage=ui.stage,
                keep_f16=keep_f16,
                convert_progress=ui.convert,
                quantize_progress=ui.quantize,
            )
    except KeyboardInterrupt as exc:
        from starchat_cli.cli.signals import Terminated

        how = ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED
        raise StarchatError(
            f"{'terminated' if how == ExitCode.TERMINATED else 'interrupted'}: run the same command again "
            "to resume the download",
            exit_code=how,
        ) from None
    origin = "from the cache (offline)" if plan.offline else f"from {target.repo}"
    print(f"pulled {entry.name} ({entry.quant}, {entry.source}) {origin}: {entry.path}")
    print(f'run it: starchat ask -m {entry.name} "..."')


class _Progress:
    """Rich progress bars on a terminal; one plain line per finished step when piped."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._reported: set[str] = set()

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(f"starchat: {text}", file=sys.stderr, flush=True)

    def file(self, name: str, done: int, total: int) -> None:
        if self._progress is not None:
            if name not in self._tasks:
                self._tasks[name] = self._progress.add_task(name, total=total, completed=done)
            self._progress.update(self._tasks[name], completed=done, total=total)
            return
        self._started.setdefault(name, time.monotonic())
        if done >= total and name not in self._reported:
            self._reported.add(name)
            secs = time.monotonic() - self._started[name]
            print(f"starchat: {name}: {total:,} bytes in {secs:.1f} s", file=sys.stderr, flush=True)

    def stage(self, text: str) -> None:
        self.say(text)

    def convert(self, done: int, total: int) -> None:
        self.file("convert", done, total)

    def quantize(self, done: int, total: int, tensor: str) -> None:
        if self._progress is not None:
            self.file("quantize (tensors)", done, total)
        elif done >= total:
            print(f"starchat: quantized {total} tensors", file=sys.stderr, flush=True)
