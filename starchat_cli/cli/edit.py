"""``starchat edit`` and ``starchat undo``: the model rewrites one file; a diff, a yes, an atomic write."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from starchat_cli.cli.options import (
    ApiKey,
    Ctx,
    Draft,
    Endpoint,
    Format,
    Gpu,
    KeepAlive,
    MaxTokens,
    Model,
    Seed,
    System,
    Threads,
    TopP,
    setting,
)

if TYPE_CHECKING:
    from starchat_cli.services.edit import Source

EDIT_HELP = """\
Let the model rewrite FILE as INSTRUCTION says; show the diff and ask before writing.

\b
  starchat edit app.py "rename py_make_scanner to make_python_scanner everywhere"
  starchat edit app.py "use the helpers from util.py" -f util.py
  starchat edit app.py "add type hints" --diff | git apply
  starchat edit app.py "add docstrings" --yes        # write without asking

The model sees the whole file (and each -f file, read-only) and writes the whole new
file. Nothing is written when the reply has no code block, leaves code out ("# ... rest
unchanged", a large deletion), was cut off, or the file changed meanwhile; a read-only
file only with --force. Every write can be reverted with `starchat undo`. Greedy
(temperature 0) unless --temperature is given.
"""

UNDO_HELP = """\
Revert the last file write of starchat (edit, or Save/insert in the chat).

\b
  starchat undo            # restore the file the last write changed
  starchat undo --list     # the writes that can still be undone, newest first

Refused when the file was edited after starchat wrote it (--force restores it anyway).
"""


def register(app: typer.Typer) -> None:
    app.command("edit", help=EDIT_HELP)(edit)
    app.command("undo", help=UNDO_HELP)(undo)


def edit(
    command: typer.Context,
    file: str = typer.Argument(..., help="The file to rewrite.", show_default=False),
    instruction: List[str] = typer.Argument(
        ..., help="What to change; several words are joined.", show_default=False
    ),
    context_files: Optional[List[str]] = typer.Option(
        None,
        "--file",
        "-f",
        help="Another file the model sees, read-only (repeat for more).",
        show_default=False,
    ),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Write without asking (also allows a path outside the working directory)."
    ),
    diff_only: bool = typer.Option(
        False, "--diff", help="Print only the patch (a/PATH b/PATH, for git apply) and write nothing."
    ),
    force: bool = typer.Option(
        False, "--force", help="Write the file even if it is read-only (its mode is kept)."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object: files, diff, applied, stats (writes only with --yes)."
    ),
    model: Model = None,
    system: System = None,
    temperature: Annotated[
        Optional[float],
        setting(
            "temperature", "--temperature", "-t", help="Sampling temperature. [default: 0, greedy, for edits]"
        ),
    ] = None,
    top_p: TopP = None,
    max_tokens: MaxTokens = None,
    seed: Seed = None,
    ctx: Ctx = None,
    threads: Threads = None,
    gpu: Gpu = None,
    keep_alive: KeepAlive = None,
    endpoint: Endpoint = None,
    api_key: ApiKey = None,
    prompt_format: Format = None,
    draft: Draft = None,
    stats: bool = typer.Option(
        False, "--stats", help="Print token counts, drafted/accepted tokens and tokens/s on stderr."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Say which model file and format are used (stderr)."
    ),
) -> None:
    from starchat_cli.cli import terminal
    from starchat_cli.cli.engines import Use, load, open_with, settings_for
    from starchat_cli.cli.progress import Progress
    from starchat_cli.cli.terminal import note, say_stats, show_diff
    from starchat_cli.core.errors import InputError, NoCodeError, NotAppliedError
    from starchat_cli.edits.errors import ReadOnlyFileError
    from starchat_cli.services import edit as service
    from starchat_cli.services.runtime import generation_params

    if diff_only and json_out:
        raise typer.BadParameter("--diff and --json do not go together (the JSON has the diff)")
    if diff_only and yes:
        raise typer.BadParameter("--diff writes nothing: drop --yes (or --diff to write)")
    # Greedy unless asked: the rewrite is mostly a copy, and sampling only adds random
    # changes to lines that should stay as they are (and makes a rerun differ).
    settings, explicit = settings_for(command, temperature=0.0 if temperature is None else temperature)
    interactive = terminal.stdin_is_terminal()
    writes = yes or not (diff_only or json_out)  # --diff and --json without --yes only preview
    source = _read_source(file, yes or not writes, interactive)
    forced = "pass --force to write it anyway (its mode is kept)"
    if writes and not force:
        try:
            service.check_writable(source)  # before the model runs: its work would be thrown away
        except ReadOnlyFileError as exc:
            raise exc.with_fix(forced) from None
    if diff_only and source.file.encoding.startswith("utf-16"):
        raise InputError(
            f"{source.display} is UTF-16: no line patch applies to it (git apply and patch see binary); "
            "use --json for the diff, or write it with --yes"
        )
    context = service.read_context(context_files or [])

    engine = open_with(settings, explicit, Use.ANY)
    info = load(engine, verbose=verbose)
    lines = len(source.file.text.splitlines())
    note(f"rewriting {source.display} ({lines} lines) with {info.name or 'the server model'}…")
    with Progress(transient=True) as bars:
        result = service.rewrite(
            engine,
            source,
            " ".join(instruction).strip(),
            generation_params(settings),
            context=context,
            system=settings.system,
            on_text=lambda _chunk, st: bars.update("rewriting", st.generated_tokens, None, "tokens"),
        )
    if stats:
        say_stats(result.stats)
    engine.persist()

    def report(applied: bool, error: str | None = None) -> None:
        if json_out:
            sys.stdout.write(json.dumps(result.report(info.name, applied, error), ensure_ascii=False) + "\n")
            sys.stdout.flush()

    plan, diff = result.plan, result.diff()
    if isinstance(result.problem, NoCodeError) or plan is None:
        sys.stderr.write(result.reply.rstrip("\n") + "\n")
        report(False, result.problem.message if result.problem else None)
        raise result.problem or NoCodeError("the reply has no code block")
    if not result.changed:
        report(False)
        note(f"no changes: the model's rewrite of {source.display} is identical; nothing written")
        return
    if result.problem is not None:
        report(False, result.problem.message)
        if not json_out:
            show_diff(diff, sys.stderr if diff_only else sys.stdout)
        raise result.problem
    if diff_only:
        terminal.write_patch(plan.patch(), diff)
        return
    if json_out and not yes:
        report(False)
        return
    if not json_out:
        show_diff(diff, sys.stdout)
        note(plan.summary())
    if not yes:
        if not interactive:
            raise NotAppliedError(
                f"not applied: no terminal to confirm on; pass --yes to write {source.display}, "
                "or --diff to print the patch"
            )
        if not terminal.confirm("Apply?"):
            raise NotAppliedError(f"not applied: {source.display} left as it was")
    try:
        service.apply(result, force=force)
    except ReadOnlyFileError as exc:  # made read-only while the model wrote
        raise exc.with_fix(forced) from None
    report(True)
    note(f"wrote {source.display} (starchat undo reverts it)")


def _read_source(file: str, allow_outside: bool, interactive: bool) -> Source:
    """The file to edit; a path outside the working directory needs --yes or a yes on the terminal."""
    from starchat_cli.cli.terminal import confirm
    from starchat_cli.core.errors import NotAppliedError
    from starchat_cli.edits.errors import OutsideRootError
    from starchat_cli.services.edit import outside_root, read_source

    if not allow_outside and outside_root(file):
        where = Path(file).expanduser().resolve()
        if not interactive:
            raise OutsideRootError(
                f"{where} is outside the working directory {Path.cwd()}: nothing done; pass --yes to allow it"
            )
        if not confirm(f"{where} is outside the working directory. Edit it anyway?"):
            raise NotAppliedError(f"not edited: {where} is outside the working directory")
        allow_outside = True
    return read_source(file, allow_outside=allow_outside)


def undo(
    list_: bool = typer.Option(False, "--list", "-l", help="Show the writes that can still be undone."),
    force: bool = typer.Option(
        False, "--force", help="Restore the file even if it was edited after starchat wrote it."
    ),
) -> None:
    import time

    from starchat_cli.edits.errors import FileChangedError
    from starchat_cli.edits.undo import UndoJournal

    journal = UndoJournal()
    cwd = Path.cwd().resolve()

    def shown(path: str) -> str:
        try:
            return str(Path(path).relative_to(cwd))
        except ValueError:
            return path

    if list_:
        entries = journal.entries()
        if not entries:
            print("nothing to undo: starchat has not written any file", file=sys.stderr)
            return
        for entry in reversed(entries[-20:]):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.time))
            gone = "" if entry.restorable else "  (cannot be undone: saved copy missing)"
            print(f"{when}  {shown(entry.path)}  {entry.summary}{gone}")
        return
    try:
        entry = journal.undo(force=force)
    except FileChangedError as exc:
        raise FileChangedError(f"{exc.message}; --force restores it anyway") from None
    verb = "restored" if entry.existed else "removed (starchat had created it)"
    from starchat_cli.cli.terminal import note

    note(f"undone: {shown(entry.path)} {verb} ({entry.summary})")


__all__ = ["edit", "register", "undo"]
