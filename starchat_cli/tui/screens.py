"""Modal screens: sessions, insert-into-file form, diff confirm, yes/no, text prompt, help."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Markdown, OptionList, Select, Static
from textual.widgets.option_list import Option

from starchat_cli.chat.codeblocks import CodeBlock
from starchat_cli.chat.sessions import Session, SessionStore
from starchat_cli.edits.plan import MODE_HELP, MODES, EditPlan


@dataclass
class SessionsChanged(Message):
    """A session was renamed or deleted from the sessions screen."""

    session_id: str
    deleted: bool = False


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__(classes="dialog-screen")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Static(self.question, markup=False, id="confirm-question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no", variant="primary")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class PromptScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(self.value, id="prompt-input")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass
class InsertRequest:
    path: str
    mode: str
    where: str  # line number, anchor text or range, depending on the mode


class InsertScreen(ModalScreen[InsertRequest | None]):
    """Where to put a code block: file name (the reply's suggestion as default), mode, position."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="insert.cancel")]
    WHERE_HINT = {
        "insert": "line number to insert before (1 = top)",
        "after": "text of the line to insert after",
        "range": "lines to replace, e.g. 10-20",
    }

    def __init__(self, block: CodeBlock, suggested: str | None, mode: str = "new") -> None:
        super().__init__(classes="dialog-screen")
        self.block = block
        self.suggested = suggested or ""
        self.mode = mode

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="insert-dialog"):
            yield Label(f"Put this {self.block.language or 'text'} block into a file", classes="dialog-title")
            preview = self.block.code if len(self.block.code) < 600 else self.block.code[:600] + "…"
            yield Static(
                Syntax(preview.rstrip("\n"), self.block.language or "text", line_numbers=False),
                id="insert-preview",
            )
            yield Label("File (relative to the working directory)")
            yield Input(self.suggested, placeholder="path/to/file.py", id="insert-path")
            yield Label("How")
            yield Select(
                [(f"{m}: {MODE_HELP[m]}", m) for m in MODES],
                value=self.mode,
                allow_blank=False,
                id="insert-mode",
            )
            yield Input(placeholder="", id="insert-where")
            with Horizontal(classes="buttons"):
                yield Button("Preview diff", id="insert-preview-diff", variant="primary")
                yield Button("Cancel", id="insert-cancel")

    def on_mount(self) -> None:
        self._update_where(self.mode)
        self.query_one("#insert-path", Input).focus()

    def _update_where(self, mode: str) -> None:
        where = self.query_one("#insert-where", Input)
        hint = self.WHERE_HINT.get(mode)
        where.display = hint is not None
        where.placeholder = hint or ""

    @on(Select.Changed, "#insert-mode")
    def _mode_changed(self, event: Select.Changed) -> None:
        self._update_where(str(event.value))

    @on(Input.Submitted)
    @on(Button.Pressed, "#insert-preview-diff")
    def _submit(self) -> None:
        self.dismiss(
            InsertRequest(
                self.query_one("#insert-path", Input).value.strip(),
                str(self.query_one("#insert-mode", Select).value),
                self.query_one("#insert-where", Input).value.strip(),
            )
        )

    @on(Button.Pressed, "#insert-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class DiffScreen(ModalScreen[bool]):
    """The unified diff of a planned write; nothing is written unless the user says yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Write", id="diff.write"),
        Binding("n,escape", "answer(False)", "Cancel", id="diff.cancel"),
    ]

    def __init__(self, plan: EditPlan) -> None:
        super().__init__(classes="dialog-screen")
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="diff-dialog"):
            yield Label(self.plan.summary(), classes="dialog-title", markup=False)
            with VerticalScroll(id="diff-scroll"):
                yield Static(
                    Syntax(self.plan.diff() or "(no change)", "diff", line_numbers=False), id="diff-body"
                )
            with Horizontal(classes="buttons"):
                yield Button("Write (y)", id="diff-write", variant="success")
                yield Button("Cancel (n)", id="diff-cancel")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "diff-write")


def describe(session: Session) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.updated))
    title = session.title or "(untitled)"
    return f"{when}  {title}  · {session.message_count} msgs · {session.model} · {session.id}"


class SessionsScreen(ModalScreen[str | None]):
    """Saved sessions: type to search (full text), Enter resumes, Ctrl+R renames, Delete removes."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="sessions.close"),
        Binding("ctrl+r", "rename", "Rename", id="sessions.rename"),
        Binding("delete,ctrl+x", "delete", "Delete", id="sessions.delete"),
        Binding("down", "focus_list", "List", show=False, id="sessions.list"),
    ]

    def __init__(self, store: SessionStore, current: str | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.store = store
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="sessions-dialog"):
            yield Label(
                "Sessions · type to search · Enter opens · Ctrl+R renames · Del deletes",
                classes="dialog-title",
            )
            yield Input(placeholder="search every message…", id="session-search")
            yield OptionList(id="session-list")

    def on_mount(self) -> None:
        self.refresh_list()
        self.query_one("#session-search", Input).focus()

    def refresh_list(self) -> None:
        query = self.query_one("#session-search", Input).value.strip()
        olist = self.query_one("#session-list", OptionList)
        olist.clear_options()
        if query:
            found = self.store.search_sessions(query)
            options = [Option(Text(f"{describe(s)}\n    {snippet}"), id=s.id) for s, snippet in found]
        else:
            options = [Option(Text(describe(s)), id=s.id) for s in self.store.list()]
        if not options:
            options = [Option("no matching sessions" if query else "no saved sessions yet", disabled=True)]
        olist.add_options(options)
        if olist.option_count and not olist.get_option_at_index(0).disabled:
            olist.highlighted = 0

    @on(Input.Changed, "#session-search")
    def _search(self) -> None:
        self.refresh_list()

    @on(Input.Submitted, "#session-search")
    def _open_first(self) -> None:
        olist = self.query_one("#session-list", OptionList)
        if olist.highlighted is not None:
            option = olist.get_option_at_index(olist.highlighted)
            if option.id:
                self.dismiss(option.id)

    @on(OptionList.OptionSelected, "#session-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.dismiss(event.option.id)

    def _highlighted(self) -> str | None:
        olist = self.query_one("#session-list", OptionList)
        if olist.highlighted is None:
            return None
        return olist.get_option_at_index(olist.highlighted).id

    def action_focus_list(self) -> None:
        self.query_one("#session-list", OptionList).focus()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_rename(self) -> None:
        sid = self._highlighted()
        if not sid:
            return

        def done(title: str | None) -> None:
            if title is not None and title.strip():
                self.store.rename(sid, title)
                self.refresh_list()
                self.app.post_message(SessionsChanged(sid))

        self.app.push_screen(PromptScreen("New title", self.store.get(sid).title), done)

    def action_delete(self) -> None:
        sid = self._highlighted()
        if not sid:
            return
        title = self.store.get(sid).title or sid

        def done(yes: bool | None) -> None:
            if yes:
                self.store.delete(sid)
                self.refresh_list()
                self.app.post_message(SessionsChanged(sid, deleted=True))

        self.app.push_screen(ConfirmScreen(f"Delete the session “{title}”? This cannot be undone."), done)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1", "close", "Close", id="help.close")]

    def __init__(self, text: str) -> None:
        super().__init__(classes="dialog-screen")
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help-dialog"):
            yield Markdown(self.text)

    def action_close(self) -> None:
        self.dismiss(None)
