"""`starchat edit`: one instruction, one file rewritten by the model, checked before it is written.

    source = read_source("app.py")      # refused: binary, outside the tree, not a regular file, no access
    check_writable(source)              # refused: read-only (unless the user forces it)
    result = rewrite(engine, source, "rename x to y", params)   # fit check, generate, extract, guards
    print(result.plan.diff())           # show it, ask (result.plan.patch(): the bytes for git apply)
    if result.problem is None: apply(result)   # atomic, refused if the file changed since read

The face (cli/edit.py) asks and prints; everything that decides lives here or below, in
:mod:`starchat_cli.edits` (the rewrite's prompt, block and guards; plans, atomic writes, the undo
journal shared with the TUI).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from starchat_cli.chat.codeblocks import extract_code_blocks
from starchat_cli.chat.inputs import decode_text
from starchat_cli.core.errors import ContextOverflowError, InputError, NoCodeError, StarchatError
from starchat_cli.edits.apply import apply_edit
from starchat_cli.edits.errors import EditError, OutsideRootError
from starchat_cli.edits.plan import EditPlan, resolve_target
from starchat_cli.edits.plan import check_writable as _check_writable
from starchat_cli.edits.rewrite import (
    ContextFile,
    ElidedCodeError,
    build_prompt,
    check_rewrite,
    new_text_from,
    pick_block,
)
from starchat_cli.edits.textfile import TextFile, read_regular, read_text_file, regular_file
from starchat_cli.edits.undo import JournalEntry, UndoJournal
from starchat_cli.engine.contract import Engine, Stats, StopReason
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import Message

# Room for the rewrite: the file's own tokens times this, plus a few for the fences and a line.
REWRITE_FACTOR = 1.15
REWRITE_EXTRA = 48


@dataclass(frozen=True)
class Source:
    """The file to edit as it was read: its text and what writing it back must keep."""

    path: Path
    display: str  # relative to the working directory when inside it
    inside: bool
    file: TextFile


def _display(target: Path, root: Path) -> str:
    try:
        return target.relative_to(root).as_posix()
    except ValueError:
        return str(target)


def read_source(
    path: str | os.PathLike[str], root: Path | None = None, *, allow_outside: bool = False
) -> Source:
    """Read the file to edit once; its snapshot is what the write is checked against."""
    root = (root or Path.cwd()).resolve()
    target, inside = resolve_target(path, root)
    display = _display(target, root)
    if not inside and not allow_outside:
        raise OutsideRootError(
            f"{target} is outside the working directory {root}: confirm it, or pass --yes to allow it"
        )
    if regular_file(target, display) is None:  # a folder, a pipe, a device: refused before opening
        raise InputError(f"{display} does not exist: give an existing file (starchat edit rewrites files)")
    return Source(target, display, inside, read_text_file(target, display))


def check_writable(source: Source) -> None:
    """ReadOnlyFileError when the file to edit is read-only (checked before the model runs)."""
    _check_writable(source.path, source.display)


def outside_root(path: str | os.PathLike[str], root: Path | None = None) -> bool:
    """Whether the path lies outside the working directory (the face asks before reading it)."""
    return not resolve_target(path, root)[1]


def read_context(paths: Sequence[str], root: Path | None = None) -> tuple[ContextFile, ...]:
    """The ``-f`` files, read-only context for the model; unreadable or binary ones are bad input."""
    root = (root or Path.cwd()).resolve()
    out = []
    for raw in paths:
        target, _ = resolve_target(raw, root)
        data, _st = read_regular(target, f"--file {raw}")
        out.append(ContextFile(_display(target, root), decode_text(data, f"--file {raw}")))
    return tuple(out)


# -- fitting ---------------------------------------------------------------------------------


def _estimate(text: str) -> int:
    """Tokens of ``text`` when the engine cannot count them: a conservative 3 characters each."""
    return len(text) // 3 + 1


def count_prompt(engine: Engine, turns: list[Message], system: str | None) -> int:
    """Tokens of the prompt as the engine renders it (its own tokenizer where it has one)."""
    chosen = engine.info.default_system if system is None else system  # as generate chooses
    counted = engine.count_tokens(turns if chosen is None else [Message("system", chosen), *turns])
    if counted is not None:
        return counted
    return sum(_estimate(m.content) for m in turns) + (_estimate(system) if system else 0) + 8


def count_text(engine: Engine, text: str) -> int:
    counted = engine.count_tokens([Message("user", text)])  # a few template tokens more: margin
    return counted if counted is not None else _estimate(text)


def suggest_ctx(needed: int) -> int:
    """A --ctx that holds ``needed`` tokens: rounded up to a multiple of 1024."""
    return int(math.ceil(needed / 1024) * 1024)


def runaway_limit(file_tokens: int) -> int:
    """Tokens after which a rewrite is a runaway (a model repeating itself): 3x the file, at least +512."""
    return max(3 * file_tokens, file_tokens + 512)


def file_block_closed(reply: str, old_text: str) -> bool:
    """Whether the reply so far holds a closed code block that differs from the file and is at
    least half as long (a copy of the file may be a quote before the rewrite)."""
    want = len(old_text.splitlines()) // 2
    return any(
        b.closed and len(b.code.splitlines()) >= want and b.code.rstrip("\n") != old_text.rstrip("\n")
        for b in extract_code_blocks(reply)
    )


def check_fit(engine: Engine, n_ctx: int, turns: list[Message], system: str | None, source: Source) -> int:
    """The tokens left for the reply; ContextOverflowError when the file and its rewrite do not fit."""
    prompt = count_prompt(engine, turns, system)
    rewrite = int(count_text(engine, source.file.text) * REWRITE_FACTOR) + REWRITE_EXTRA
    needed = prompt + rewrite
    if needed > n_ctx:
        raise ContextOverflowError(
            f"{source.display} and its rewrite need about {needed:,} tokens (prompt {prompt:,}, rewrite "
            f"{rewrite:,}) but the context holds {n_ctx:,}: use --ctx {suggest_ctx(needed)}, "
            "or edit a smaller file"
        )
    return n_ctx - prompt


# -- the rewrite -----------------------------------------------------------------------------


@dataclass
class EditResult:
    source: Source
    plan: EditPlan | None  # None when the reply has no usable block
    reply: str
    stats: Stats
    problem: StarchatError | None = None  # why it must not be written (NoCodeError, ElidedCodeError, ...)

    @property
    def changed(self) -> bool:
        return self.plan is not None and self.plan.new_text != self.plan.old_text

    def diff(self) -> str:
        return self.plan.diff() if self.plan is not None else ""

    def report(self, model: str, applied: bool, error: str | None = None) -> dict[str, object]:
        """What ``starchat edit --json`` prints: the file, the diff, whether it was written."""
        old = self.source.file.text
        new = self.plan.new_text if self.plan is not None else old
        file = {"path": self.source.display, "changed": self.changed}
        file.update(lines_before=len(old.splitlines()), lines_after=len(new.splitlines()))
        obj: dict[str, object] = {"files": [file], "diff": self.diff(), "applied": applied}
        obj.update(model=model, text=self.reply, stats=self.stats.as_dict())
        return obj if error is None else {**obj, "error": error}


def plan_rewrite(source: Source, new_text: str) -> EditPlan:
    """The whole-file plan from the text read at the start (so the write checks against that read)."""
    f = source.file
    return EditPlan(
        source.path,
        "replace",
        f.text,
        new_text,
        f.encoding,
        f.newline,
        f.snapshot,
        source.inside,
        source.display,
        f.data,
    )


def rewrite(
    engine: Engine,
    source: Source,
    instruction: str,
    params: GenerationParams,
    *,
    context: tuple[ContextFile, ...] = (),
    system: str | None = None,
    cancel: threading.Event | None = None,
    on_text: Callable[[str, Stats], None] | None = None,
) -> EditResult:
    """Ask the model for the new file and check it; nothing is written here.

    Raises ContextOverflowError before generating; a reply that must not be applied
    (no code block, elided code, ...) comes back with ``problem`` set and the reply kept.
    """
    if not instruction.strip():
        raise InputError('no instruction: say what to change, e.g. starchat edit app.py "add type hints"')
    turns = [Message("user", build_prompt(source.display, source.file.text, instruction, context))]
    info = engine.load()
    params = params.model_copy(update={"prediction": source.file.text})
    limit = params.max_tokens or runaway_limit(count_text(engine, source.file.text))
    if info.n_ctx:
        limit = min(limit, check_fit(engine, info.n_ctx, turns, system, source))
    params = params.model_copy(update={"max_tokens": limit})
    gen = engine.generate(turns, params, system=system, cancel=cancel)
    done_early = False
    try:
        for chunk in gen:
            if on_text is not None:
                on_text(chunk, gen.stats)
            if "\n" in chunk and file_block_closed(gen.text, source.file.text):
                done_early = True  # the file is complete: what a model adds after it is not needed
                break
    finally:
        gen.close(StopReason.STOP if done_early else None)
    stats = gen.stats
    reply = gen.text
    if stats.stop_reason is StopReason.CANCELLED:
        raise KeyboardInterrupt
    try:
        block = pick_block(reply, source.display)
    except NoCodeError as exc:
        return EditResult(source, None, reply, stats, exc)
    new_text = new_text_from(block, source.file.text)
    plan = plan_rewrite(source, new_text)
    result = EditResult(source, plan, reply, stats)
    cut_off = not block.closed and stats.stop_reason in (StopReason.LENGTH, StopReason.CONTEXT)
    try:
        check_rewrite(source.file.text, new_text, instruction, cut_off=cut_off)
        plan.new_bytes()  # the file's encoding must hold the new text
    except (ElidedCodeError, EditError) as exc:
        result.problem = exc
    return result


def apply(
    result: EditResult, journal: UndoJournal | None = None, *, force: bool = False
) -> JournalEntry | None:
    """Write the rewrite (atomic; refused if the file changed since it was read, or is read-only
    unless ``force``) into the undo journal."""
    if result.problem is not None:
        raise result.problem
    if result.plan is None or not result.changed:
        return None
    return apply_edit(result.plan, journal if journal is not None else UndoJournal(), force=force)


__all__ = [
    "EditResult",
    "Source",
    "apply",
    "check_fit",
    "check_writable",
    "count_prompt",
    "outside_root",
    "plan_rewrite",
    "read_context",
    "read_source",
    "rewrite",
    "suggest_ctx",
]
