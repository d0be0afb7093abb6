"""Code blocks of the replies: pick one, then copy it, or save / insert it into a file.

A write goes: the insert form (file, mode, position; the reply's suggested file name as
default) → the plan (a path outside the working directory needs a second yes) → the
diff, which needs a yes → the write, recorded in the undo journal. The flow needs only
Textual's :class:`~textual.app.App` (screens, notifications, the terminal's clipboard)::

    flow = CodeFlow(app, root=Path.cwd(), journal=UndoJournal())
    flow.insert_picked("2", mode="insert")  # block 2 of the last reply: form, diff, write
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textual.app import App

from starchat_cli.chat.codeblocks import CodeBlock
from starchat_cli.core.errors import StarchatError
from starchat_cli.edits.apply import apply_edit
from starchat_cli.edits.errors import EditError, OutsideRootError
from starchat_cli.edits.plan import EditPlan, parse_range, plan_edit
from starchat_cli.edits.undo import UndoJournal

from .clipboard import system_copy
from .screens import ConfirmScreen, DiffScreen, InsertRequest, InsertScreen
from .widgets import AssistantMessage, suggest


class CodeFlow:
    """The copy / save / insert / undo flow, on behalf of an app (its screens and notifications)."""

    def __init__(self, app: App[Any], *, root: Path, journal: UndoJournal) -> None:
        self.app = app
        self.root = root
        self.journal = journal

    def copy(self, block: CodeBlock) -> None:
        """Put the block on the clipboard: the system's tool, else the terminal (OSC 52)."""
        if system_copy(block.code):
            self.app.notify("code copied to the clipboard")
        else:
            self.app.copy_to_clipboard(block.code)  # OSC 52: the terminal puts it on the clipboard
            self.app.notify("code copied (through the terminal, OSC 52)")

    def last_blocks(self) -> tuple[list[CodeBlock], str]:
        """The code blocks of the latest reply that has any, and that reply's text."""
        for widget in reversed(list(self.app.query(AssistantMessage))):
            if widget.blocks:
                return widget.blocks, widget.text
        return [], ""

    def pick(self, arg: str) -> tuple[CodeBlock, str] | None:
        """Block number ``arg`` (1-based, "#2" too; default: the last) and its reply; None if there is none."""
        blocks, reply = self.last_blocks()
        if not blocks:
            self.app.notify("no code block in the replies yet", severity="warning")
            return None
        index = len(blocks)
        if arg.strip():
            try:
                index = int(arg.strip().lstrip("#"))
            except ValueError:
                self.app.notify(f"not a block number: {arg}", severity="warning")
                return None
        if not 1 <= index <= len(blocks):
            self.app.notify(f"the last reply has {len(blocks)} code block(s)", severity="warning")
            return None
        return blocks[index - 1], reply

    def copy_picked(self, arg: str = "") -> None:
        picked = self.pick(arg)
        if picked:
            self.copy(picked[0])

    def insert_picked(self, arg: str = "", mode: str = "new") -> None:
        picked = self.pick(arg)
        if picked:
            self.start_insert(*picked, mode=mode)

    def on_action(self, action: str, block: CodeBlock, reply: str) -> None:
        """A code block's button: copy, or save / insert."""
        if action == "copy":
            self.copy(block)
        else:
            self.start_insert(block, reply, mode="new")

    def start_insert(self, block: CodeBlock, reply: str, mode: str = "new") -> None:
        """Ask where the block goes; a new file whose suggested name exists becomes an append."""
        suggested = suggest(reply, block)
        # os.path.exists: False where it may not look (Path.exists raises in a folder it may not search).
        if mode == "new" and suggested and os.path.exists(self.root / suggested):
            mode = "append"

        def submitted(req: InsertRequest | None) -> None:
            if req is not None:
                self.plan_insert(block, req, allow_outside=False)

        self.app.push_screen(InsertScreen(block, suggested, mode), submitted)

    def plan_insert(self, block: CodeBlock, req: InsertRequest, allow_outside: bool) -> None:
        try:
            kwargs: dict[str, Any] = {}
            if req.mode == "insert":
                if not req.where.isdigit():
                    raise EditError("give the line number to insert before")
                kwargs["line"] = int(req.where)
            elif req.mode == "after":
                kwargs["anchor"] = req.where
            elif req.mode == "range":
                kwargs["line_range"] = parse_range(req.where)
            plan = plan_edit(
                req.path, block.code, req.mode, root=self.root, allow_outside=allow_outside, **kwargs
            )
        except OutsideRootError as exc:

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.plan_insert(block, req, allow_outside=True)

            self.app.push_screen(ConfirmScreen(f"{exc.message}.\nWrite there anyway?"), confirmed)
            return
        except StarchatError as exc:
            self.app.notify(exc.message, severity="error", timeout=8)
            return
        self.app.push_screen(
            DiffScreen(plan),
            lambda yes: self.apply_plan(plan) if yes else self.app.notify("nothing written"),
        )

    def apply_plan(self, plan: EditPlan) -> None:
        try:
            apply_edit(plan, self.journal)
        except StarchatError as exc:
            self.app.notify(exc.message, severity="error", timeout=10)
            return
        except OSError as exc:
            self.app.notify(
                f"cannot write {plan.display_path}: {exc.strerror or exc}", severity="error", timeout=10
            )
            return
        self.app.notify(f"wrote {plan.display_path} (undo: Ctrl+R or /undo)")

    def undo(self) -> None:
        """Restore the file written last (the journal survives a restart)."""
        try:
            entry = self.journal.undo()
        except StarchatError as exc:
            self.app.notify(exc.message, severity="warning")
            return
        self.app.notify(f"undone: {entry.summary}")


__all__ = ["CodeFlow"]
