"""The ``starchat chat`` Textual app.

Build it with :func:`make_app` (never at import). The model's reply streams from a
thread worker into the UI through typed messages; text arriving faster than the UI
draws is coalesced (one pending message at a time) and appended to the reply's
Markdown through Textual's ``MarkdownStream``, which parses only the new tail, so the
cost per token does not grow with the length of the reply. Esc stops a reply and keeps
what arrived, marked as stopped. Every message is saved when it completes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from starchat_cli.chat.codeblocks import CodeBlock
from starchat_cli.chat.edits import (
    EditError,
    EditPlan,
    OutsideRootError,
    UndoJournal,
    apply_edit,
    parse_range,
    plan_edit,
    suggest_filename,
)
from starchat_cli.chat.sessions import Session, SessionStore
from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import GenerationParams
from starchat_cli.engine.prompts import Message as Turn
from starchat_cli.engine.prompts import merge_turns

from .clipboard import system_copy
from .screens import (
    ConfirmScreen,
    DiffScreen,
    HelpScreen,
    InsertRequest,
    InsertScreen,
    SessionsChanged,
    SessionsScreen,
)
from .widgets import AssistantMessage, ChatInput, CodeActions, Note, StatusBar, UserMessage

EngineFactory = Callable[[str], tuple[str, Any]]

HELP = """\
# starchat chat

## Keys

| key | does |
|---|---|
| Enter | send the message |
| Ctrl+J (or Shift+Enter where the terminal reports it) | new line in the message |
| Up / Down on the first / last line | earlier messages you sent |
| Esc | stop the reply (the part received is kept, marked *stopped*) |
| Ctrl+N | new session |
| Ctrl+O | sessions: search, resume, rename (Ctrl+R), delete (Del) |
| Ctrl+B | copy the last code block |
| Ctrl+S | save or insert the last code block into a file |
| Ctrl+R | undo the last file write |
| Ctrl+P | command palette |
| F1 | this help |
| Ctrl+Q | quit |

## Commands

| command | does |
|---|---|
| `/new` | start a new session (default system prompt) |
| `/clear` | clear the screen and the context: a new session with the same model and system prompt |
| `/model [NAME]` | show or switch the model |
| `/system [TEXT]` | show or set the system prompt (`/system default` restores the model's own) |
| `/save [N]` | save code block N of the last reply (default: the last block) as a new file |
| `/insert [N]` | insert code block N into an existing file |
| `/copy [N]` | copy code block N to the clipboard |
| `/undo` | undo the last file write (also after a restart) |
| `/export [PATH]` | export this session to Markdown |
| `/sessions` | open the sessions list |
| `/rename TITLE` | rename this session |
| `/help` | this help |
| `/quit` | leave |

Every write shows a diff first and needs a yes. Files outside the working directory
need a second yes. Sessions are saved as you go.
"""


# -- typed messages from the worker threads -------------------------------------------------


@dataclass
class ReplyStarted(Message):
    gen_id: int
    prompt_tokens: int
    n_ctx: int
    dropped_turns: int


@dataclass
class ReplyChunk(Message):
    gen_id: int


@dataclass
class ReplyDone(Message):
    gen_id: int
    text: str
    stopped: bool
    stats: Any = None
    error: str | None = None


@dataclass
class ModelReady(Message):
    name: str
    n_ctx: int
    engine: Any = None
    error: str | None = None


@dataclass
class _Generation:
    gen_id: int
    session_id: str
    widget: AssistantMessage
    cancel: threading.Event = field(default_factory=threading.Event)
    sent_at: float = field(default_factory=time.perf_counter)
    shown: bool = False


def normalize_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Alternating user/assistant turns ending with a user turn (a crash can leave two users in a row)."""
    return merge_turns(turns, from_first_user=True)


def _suggest(reply: str, block: CodeBlock) -> str | None:
    return suggest_filename(reply, block.start_line, block.code, block.info)


class ChatApp(App[None]):
    CSS_PATH = "chat.tcss"
    TITLE = "starchat"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+n", "new_session", "New", id="chat.new"),
        Binding("ctrl+o", "sessions", "Sessions", id="chat.sessions"),
        Binding("ctrl+b", "copy_block", "Copy code", id="chat.copy"),
        Binding("ctrl+s", "save_block", "Save code", id="chat.save"),
        Binding("ctrl+r", "undo", "Undo write", id="chat.undo"),
        Binding("f1", "help", "Help", id="chat.help"),
        Binding("ctrl+q", "quit", "Quit", id="chat.quit", priority=True),
    ]

    def __init__(
        self,
        engine: Any,
        *,
        model_name: str,
        store: SessionStore,
        session_id: str | None = None,
        system: str | None = None,
        params: GenerationParams | None = None,
        engine_factory: EngineFactory | None = None,
        journal: UndoJournal | None = None,
        root: Path | None = None,
        preload: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.model_name = model_name
        self.store = store
        self.params = params or GenerationParams()
        self.engine_factory = engine_factory
        self.journal = journal or UndoJournal()
        self.root = (root or Path.cwd()).resolve()
        self.preload = preload
        self.cli_system = system
        self.system: str | None = system  # None: the model's default system prompt
        self.session: Session | None = None
        self.history: list[Turn] = []
        self._engine_lock = threading.Lock()
        self._gen_id = 0
        self._current: _Generation | None = None
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._chunk_posted = False
        self.n_ctx = engine.info.n_ctx
        self.context_used = 0
        self.last_tps = 0.0
        self.state = ""
        self._resume_id = session_id
        self.first_text_seconds: list[float] = []  # per reply: Enter to its first text on screen

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")
        yield ChatInput(id="input")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    @property
    def input(self) -> ChatInput:
        return self.query_one("#input", ChatInput)

    async def on_mount(self) -> None:
        self.transcript.anchor()
        if self._resume_id:
            await self.open_session(self._resume_id, keep_system=self.cli_system is not None)
        else:
            await self._show_welcome()
        self.input.focus()
        if self.preload and not self.engine.info.loaded:
            self.state = "loading model…"
            self._preload(self.engine, self.model_name)
        self.update_status()

    async def _show_welcome(self) -> None:
        await self.transcript.mount(
            Static(
                f"Chatting with {self.model_name}. Enter sends, Ctrl+J adds a line, Esc stops a reply, "
                "F1 or /help lists keys and commands.",
                id="welcome",
                markup=False,
            )
        )

    def update_status(self) -> None:
        title = ""
        if self.session is not None:
            title = f"{self.session.title or 'new session'} ({self.session.id})"
        self.query_one(StatusBar).show(
            model=self.model_name,
            used=self.context_used,
            n_ctx=self.n_ctx,
            tps=self.last_tps,
            session=title,
            state=self.state,
        )

    # -- command palette ------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New session", "Start a new chat session", self.action_new_session)
        yield SystemCommand(
            "Sessions", "Search, resume, rename or delete saved sessions", self.action_sessions
        )
        yield SystemCommand("Stop reply", "Stop the reply being generated", self.action_stop)
        yield SystemCommand("Copy last code block", "Copy it to the clipboard", self.action_copy_block)
        yield SystemCommand("Save last code block", "Save or insert it into a file", self.action_save_block)
        yield SystemCommand("Undo last file write", "Restore the file starchat wrote last", self.action_undo)
        yield SystemCommand(
            "Export session", "Export this session to Markdown", lambda: self.run_command("/export")
        )
        yield SystemCommand("Help", "Keys and commands", self.action_help)

    # -- sending -----------------------------------------------------------------------------
    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if text.startswith("/"):
            event.input.remember(text)
            event.input.clear()
            await self.run_command(text)
            return
        if self._current is not None:
            self.notify("A reply is still streaming: wait, or press Esc to stop it", severity="warning")
            return
        event.input.remember(event.value)
        event.input.clear()
        await self.send(event.value.rstrip())

    def _ensure_session(self) -> Session:
        if self.session is None:
            self.session = self.store.create(self.model_name, system=self.system)
        return self.session

    async def send(self, text: str) -> None:
        sent_at = time.perf_counter()
        session = self._ensure_session()
        self.store.add_message(session.id, "user", text)
        self.session = self.store.get(session.id)
        self.history.append(Turn("user", text))
        for welcome in self.query("#welcome"):
            await welcome.remove()
        widget = AssistantMessage(model=self.model_name)
        await self.transcript.mount_all([UserMessage(text), widget])
        widget.start_stream()
        self._gen_id += 1
        self._current = _Generation(self._gen_id, session.id, widget, sent_at=sent_at)
        with self._pending_lock:
            self._pending.clear()
            self._chunk_posted = False
        self.state = "generating…"
        self.update_status()
        # Start the model once the new messages are laid out and drawn: the worker's Python
        # (prompt fitting, sampling) would otherwise wait for the GIL behind that layout work.
        self.call_after_refresh(self._generate, self._current, normalize_turns(self.history), self.system)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, gen_state: _Generation, turns: list[Turn], system: str | None) -> None:
        parts: list[str] = []
        cancel = gen_state.cancel
        stats = None
        try:
            with self._engine_lock:
                gen = self.engine.generate(turns, self.params, system=system, cancel=cancel)
                stats = gen.stats
                self.post_message(
                    ReplyStarted(gen_state.gen_id, stats.prompt_tokens, stats.n_ctx, stats.dropped_turns)
                )
                try:
                    for chunk in gen:
                        if cancel.is_set():
                            break
                        parts.append(chunk)
                        self._push_chunk(gen_state.gen_id, chunk)
                        if cancel.is_set():
                            break
                finally:
                    gen.close()
        except StarchatError as exc:
            self.post_message(ReplyDone(gen_state.gen_id, "".join(parts), True, stats, exc.message))
            return
        except Exception as exc:  # an unexpected failure is shown, never a crash of the UI
            self.post_message(
                ReplyDone(gen_state.gen_id, "".join(parts), True, stats, f"{type(exc).__name__}: {exc}")
            )
            return
        stopped = cancel.is_set() or (stats is not None and stats.stop_reason == "cancelled")
        self.post_message(ReplyDone(gen_state.gen_id, "".join(parts), stopped, stats))

    def _push_chunk(self, gen_id: int, text: str) -> None:
        """From the worker: queue text; at most one ReplyChunk is in flight at a time."""
        with self._pending_lock:
            self._pending.append(text)
            if self._chunk_posted:
                return
            self._chunk_posted = True
        self.post_message(ReplyChunk(gen_id))

    def _take_pending(self) -> str:
        with self._pending_lock:
            text = "".join(self._pending)
            self._pending.clear()
            self._chunk_posted = False
        return text

    @on(ReplyStarted)
    async def _reply_started(self, event: ReplyStarted) -> None:
        if self._current is None or event.gen_id != self._current.gen_id:
            return
        self.n_ctx = event.n_ctx or self.n_ctx
        if event.dropped_turns:
            n = event.dropped_turns
            note = Note(
                f"⚠ The conversation outgrew the {event.n_ctx:,}-token context: the {n} oldest "
                f"turn{'s' if n != 1 else ''} {'were' if n != 1 else 'was'} left out of this reply's prompt "
                "(the system prompt and your latest message are kept).",
                kind="warning",
            )
            await self.transcript.mount(note, before=self._current.widget)
            self.notify(f"{n} oldest turn(s) dropped to fit the context", severity="warning")

    @on(ReplyChunk)
    async def _reply_chunk(self, event: ReplyChunk) -> None:
        if self._current is None or event.gen_id != self._current.gen_id:
            return
        text = self._take_pending()
        current = self._current
        if text and current.widget.is_attached:  # not when the user switched sessions mid-reply
            await current.widget.append(text)
            if not current.shown:
                current.shown = True
                self.first_text_seconds.append(time.perf_counter() - current.sent_at)

    @on(ReplyDone)
    async def _reply_done(self, event: ReplyDone) -> None:
        current = self._current
        if current is None or event.gen_id != current.gen_id:
            return
        try:
            await self._finish_reply(current, event)
        finally:
            self._current = None  # only now: the reply is saved and drawn in full
            self.update_status()

    async def _finish_reply(self, current: _Generation, event: ReplyDone) -> None:
        rest = self._take_pending()
        widget = current.widget
        if rest and widget.is_attached:
            await widget.append(rest)
        st = event.stats
        if event.error is None or event.text:
            self.store.add_message(
                current.session_id,
                "assistant",
                event.text,
                stopped=event.stopped,
                stats=st.as_dict() if st is not None and hasattr(st, "as_dict") else None,
            )
        on_screen = self.session is not None and self.session.id == current.session_id
        if on_screen and (event.error is None or event.text):
            self.history.append(Turn("assistant", event.text))
        if widget.is_attached:
            await widget.finish(event.stopped, _suggest)
            if event.error:
                await self.transcript.mount(Note(f"✗ {event.error}", kind="error"))
        if event.error:
            self.notify(event.error, severity="error", timeout=8)
        if st is not None:
            self.n_ctx = st.n_ctx or self.n_ctx
            self.context_used = st.prompt_tokens + st.generated_tokens
            self.last_tps = st.tokens_per_second
            if st.stop_reason == "context":
                await self.transcript.mount(
                    Note(
                        "⚠ The reply was cut off: the context window is full (start /new or raise --ctx).",
                        "warning",
                    )
                )
            elif st.stop_reason == "length":
                await self.transcript.mount(Note("The reply stopped at the --max-tokens limit.", "info"))
        if self.session is not None:
            self.session = self.store.get(self.session.id)
        self.state = "stopped" if event.stopped and not event.error else ""

    @property
    def generating(self) -> bool:
        return self._current is not None

    # -- model loading ---------------------------------------------------------------------------
    @work(thread=True, group="load", exit_on_error=False)
    def _preload(self, engine: Any, name: str) -> None:
        try:
            with self._engine_lock:
                info = engine.load()
            self.post_message(ModelReady(name, info.n_ctx, engine))
        except StarchatError as exc:
            self.post_message(ModelReady(name, 0, engine, exc.message))

    @work(thread=True, group="load", exit_on_error=False)
    def _switch_model(self, name: str) -> None:
        assert self.engine_factory is not None
        try:
            resolved, engine = self.engine_factory(name)
            with self._engine_lock:
                info = engine.load()
            self.post_message(ModelReady(resolved, info.n_ctx, engine))
        except StarchatError as exc:
            self.post_message(ModelReady(name, 0, None, exc.message))

    @on(ModelReady)
    def _model_ready(self, event: ModelReady) -> None:
        self.state = ""
        if event.error:
            self.notify(event.error, severity="error", timeout=10)
            self.update_status()
            return
        if event.engine is not None and event.engine is not self.engine:
            self.engine = event.engine
            self.model_name = event.name
            if self.session is not None:
                self.store.update(self.session.id, model=event.name)
            self.notify(f"model: {event.name}")
        self.n_ctx = event.n_ctx or self.n_ctx
        for warning in (event.engine or self.engine).info.warnings:
            self.notify(warning, severity="warning", timeout=15)  # e.g. an out-of-memory retry
        self.update_status()

    # -- actions --------------------------------------------------------------------------------
    def action_stop(self) -> None:
        if self._current is not None:
            self._current.cancel.set()
            self.state = "stopping…"
            self.update_status()

    async def action_new_session(self) -> None:
        await self.new_session(system=self.cli_system)

    async def new_session(self, system: str | None) -> None:
        if self._current is not None:
            self._current.cancel.set()
        self.session = None
        self.history = []
        self.system = system
        self.context_used = 0
        await self.transcript.remove_children()
        await self._show_welcome()
        self.update_status()
        self.input.focus()

    def action_sessions(self) -> None:
        def chosen(session_id: str | None) -> None:
            if session_id and (self.session is None or session_id != self.session.id):
                self.call_later(self.open_session, session_id)

        self.push_screen(SessionsScreen(self.store, self.session.id if self.session else None), chosen)

    async def open_session(self, session_id: str, keep_system: bool = False) -> None:
        """Show a saved session and continue it."""
        try:
            session = self.store.get(session_id)
        except StarchatError as exc:
            self.notify(exc.message, severity="error")
            return
        if self._current is not None:
            self._current.cancel.set()  # the partial reply is saved to the session it belongs to
        messages = self.store.messages(session.id)
        if keep_system and self.cli_system != session.system:
            self.store.update(session.id, system=self.cli_system)
            session = self.store.get(session.id)
        self.session = session
        self.system = session.system
        self.history = [Turn(m.role, m.content) for m in messages]  # type: ignore[arg-type]
        await self.transcript.remove_children()
        widgets = []
        for m in messages:
            if m.role == "user":
                widgets.append(UserMessage(m.content))
            else:
                widgets.append(AssistantMessage(m.content, model=session.model, stopped=m.stopped))
        await self.transcript.mount(
            Note(f"Resumed “{session.title or session.id}” ({len(messages)} messages).")
        )
        if widgets:
            await self.transcript.mount_all(widgets)
        for w in widgets:
            if isinstance(w, AssistantMessage):
                await w.show_extras(_suggest)
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        if last is not None and last.stats:
            self.context_used = int(last.stats.get("prompt_tokens", 0)) + int(
                last.stats.get("generated_tokens", 0)
            )
            self.n_ctx = int(last.stats.get("n_ctx", self.n_ctx) or self.n_ctx)
        self.transcript.scroll_end(animate=False)
        self.update_status()

    @on(SessionsChanged)
    async def _sessions_changed(self, event: SessionsChanged) -> None:
        if self.session is not None and event.session_id == self.session.id:
            if event.deleted:
                await self.new_session(self.system)
            else:
                self.session = self.store.get(self.session.id)
                self.update_status()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(HELP))

    def action_undo(self) -> None:
        try:
            entry = self.journal.undo()
        except StarchatError as exc:
            self.notify(exc.message, severity="warning")
            return
        self.notify(f"undone: {entry.summary}")

    # -- code blocks --------------------------------------------------------------------------------
    def _last_blocks(self) -> tuple[list[CodeBlock], str]:
        for widget in reversed(list(self.query(AssistantMessage))):
            if widget.blocks:
                return widget.blocks, widget.text
        return [], ""

    def _pick_block(self, arg: str) -> tuple[CodeBlock, str] | None:
        blocks, reply = self._last_blocks()
        if not blocks:
            self.notify("no code block in the replies yet", severity="warning")
            return None
        index = len(blocks)
        if arg.strip():
            try:
                index = int(arg.strip().lstrip("#"))
            except ValueError:
                self.notify(f"not a block number: {arg}", severity="warning")
                return None
        if not 1 <= index <= len(blocks):
            self.notify(f"the last reply has {len(blocks)} code block(s)", severity="warning")
            return None
        return blocks[index - 1], reply

    def action_copy_block(self) -> None:
        picked = self._pick_block("")
        if picked:
            self.copy_block(picked[0])

    def action_save_block(self) -> None:
        picked = self._pick_block("")
        if picked:
            self.start_insert(*picked, mode="new")

    def copy_block(self, block: CodeBlock) -> None:
        if system_copy(block.code):
            self.notify("code copied to the clipboard")
        else:
            self.copy_to_clipboard(block.code)  # OSC 52: the terminal puts it on the clipboard
            self.notify("code copied (through the terminal, OSC 52)")

    @on(CodeActions.Action)
    def _code_action(self, event: CodeActions.Action) -> None:
        if event.action == "copy":
            self.copy_block(event.block)
        else:
            self.start_insert(event.block, event.reply, mode="new")

    def start_insert(self, block: CodeBlock, reply: str, mode: str = "new") -> None:
        suggested = _suggest(reply, block)
        if mode == "new" and suggested and (self.root / suggested).exists():
            mode = "append"

        def submitted(req: InsertRequest | None) -> None:
            if req is not None:
                self.plan_insert(block, req, allow_outside=False)

        self.push_screen(InsertScreen(block, suggested, mode), submitted)

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

            self.push_screen(ConfirmScreen(f"{exc.message}.\nWrite there anyway?"), confirmed)
            return
        except StarchatError as exc:
            self.notify(exc.message, severity="error", timeout=8)
            return
        self.push_screen(
            DiffScreen(plan), lambda yes: self.apply_plan(plan) if yes else self.notify("nothing written")
        )

    def apply_plan(self, plan: EditPlan) -> None:
        try:
            apply_edit(plan, self.journal)
        except StarchatError as exc:
            self.notify(exc.message, severity="error", timeout=10)
            return
        except OSError as exc:
            self.notify(
                f"cannot write {plan.display_path}: {exc.strerror or exc}", severity="error", timeout=10
            )
            return
        self.notify(f"wrote {plan.display_path} (undo: Ctrl+R or /undo)")

    # -- slash commands ----------------------------------------------------------------------------
    async def run_command(self, line: str) -> None:
        name, _, arg = line.strip().partition(" ")
        name = name.lower()
        arg = arg.strip()
        if name == "/new":
            await self.new_session(system=self.cli_system)
        elif name == "/clear":
            await self.new_session(system=self.system)
        elif name == "/help":
            self.action_help()
        elif name == "/undo":
            self.action_undo()
        elif name in ("/save", "/insert", "/copy"):
            picked = self._pick_block(arg)
            if picked is None:
                return
            if name == "/copy":
                self.copy_block(picked[0])
            else:
                self.start_insert(*picked, mode="new" if name == "/save" else "insert")
        elif name == "/export":
            self.export(arg)
        elif name == "/sessions":
            self.action_sessions()
        elif name == "/rename":
            if self.session is None or not arg:
                self.notify("usage: /rename TITLE (after the first message)", severity="warning")
                return
            self.session = self.store.rename(self.session.id, arg)
            self.update_status()
        elif name == "/system":
            self.set_system(arg)
        elif name == "/model":
            self.switch_model(arg)
        elif name in ("/quit", "/exit"):
            self.exit()
        else:
            self.notify(f"unknown command {name}: /help lists them", severity="warning")

    def set_system(self, arg: str) -> None:
        if not arg:
            shown = self.system if self.system is not None else "(the model's default)"
            self.notify(f"system prompt: {shown}", timeout=8)
            return
        self.system = None if arg.lower() == "default" else arg
        if self.session is not None:
            self.store.update(self.session.id, system=self.system)
        self.notify("system prompt set" if self.system is not None else "system prompt: the model's default")

    def switch_model(self, name: str) -> None:
        if not name:
            self.notify(f"model: {self.model_name} (switch with /model NAME)")
            return
        if self.engine_factory is None:
            self.notify("switching models is not available here", severity="warning")
            return
        if self._current is not None:
            self.notify("wait for the reply to finish (or Esc) before switching models", severity="warning")
            return
        self.state = f"loading {name}…"
        self.update_status()
        self._switch_model(name)

    def export(self, arg: str) -> None:
        if self.session is None:
            self.notify("nothing to export yet", severity="warning")
            return
        target = Path(arg).expanduser() if arg else self.root / f"starchat-{self.session.id}.md"
        if not target.is_absolute():
            target = self.root / target
        try:
            self.store.export_markdown(self.session.id, target)
        except (StarchatError, OSError) as exc:
            self.notify(f"cannot export: {exc}", severity="error")
            return
        self.notify(f"exported to {target}")


def make_app(
    engine: Any,
    *,
    model_name: str,
    store: SessionStore | None = None,
    session_id: str | None = None,
    system: str | None = None,
    params: GenerationParams | None = None,
    engine_factory: EngineFactory | None = None,
    journal: UndoJournal | None = None,
    root: Path | None = None,
    preload: bool = True,
) -> ChatApp:
    """Build the chat app: the CLI, the tests and the benchmark all come through here."""
    return ChatApp(
        engine,
        model_name=model_name,
        store=store or SessionStore(),
        session_id=session_id,
        system=system,
        params=params,
        engine_factory=engine_factory,
        journal=journal,
        root=root,
        preload=preload,
    )


__all__ = ["ChatApp", "make_app", "normalize_turns"]
