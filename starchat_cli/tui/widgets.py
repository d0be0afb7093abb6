"""Widgets of the chat screen: the input, the messages, code-block actions, the status bar."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Label, Markdown, Static, TextArea
from textual.widgets.markdown import MarkdownStream

from starchat_cli.chat.codeblocks import BlockSplitter, CodeBlock, extract_code_blocks
from starchat_cli.chat.filenames import suggest_filename


def suggest(reply: str, block: CodeBlock) -> str | None:
    """The file name the reply gives for a block, if any (its row shows it; saving offers it)."""
    return suggest_filename(reply, block.start_line, block.code, block.info)


class ChatInput(TextArea):
    """Multi-line input: Enter sends, Ctrl+J (or Shift+Enter) inserts a newline.

    Up on the first line and Down on the last line walk through earlier inputs.
    """

    NEWLINE_KEYS = ("ctrl+j", "shift+enter", "alt+enter")

    @dataclass
    class Submitted(Message):
        input: ChatInput
        value: str

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.sent: list[str] = []
        self._history_pos: int | None = None  # index into history while browsing
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in self.NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)

    def remember(self, text: str) -> None:
        if text.strip() and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._history_pos = None

    def _show(self, text: str) -> None:
        self.text = text
        lines = text.split("\n")
        self.move_cursor((len(lines) - 1, len(lines[-1])))

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self.cursor_location[0] == 0 and self.sent:
            if self._history_pos is None:
                self._draft = self.text
                self._history_pos = len(self.sent) - 1
            elif self._history_pos > 0:
                self._history_pos -= 1
            self._show(self.sent[self._history_pos])
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        last_row = self.document.line_count - 1
        if not select and self._history_pos is not None and self.cursor_location[0] == last_row:
            if self._history_pos < len(self.sent) - 1:
                self._history_pos += 1
                self._show(self.sent[self._history_pos])
            else:
                self._history_pos = None
                self._show(self._draft)
            return
        super().action_cursor_down(select)


class UserMessage(Static):
    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="message user")
        self.border_title = "you"


class Note(Static):
    """A line from starchat itself inside the transcript (dropped turns, errors)."""

    def __init__(self, text: str, kind: str = "info") -> None:
        super().__init__(text, markup=False, classes=f"note -{kind}")


class CodeActions(Horizontal):
    """One row per code block: its language, the suggested file name, and the actions."""

    @dataclass
    class Action(Message):
        action: str  # copy | save
        block: CodeBlock
        reply: str

    def __init__(self, index: int, block: CodeBlock, reply: str, suggested: str | None) -> None:
        super().__init__(classes="code-actions")
        self.index = index
        self.block = block
        self.reply = reply
        self.suggested = suggested

    def compose(self) -> ComposeResult:
        lines = len(self.block.code.splitlines())
        label = f"#{self.index} {self.block.language or 'text'} · {lines} line{'s' if lines != 1 else ''}"
        if self.suggested:
            label += f" · {self.suggested}"
        yield Label(label, classes="code-label")
        yield Button("Copy", id=f"copy-{self.index}", classes="code-copy", compact=True)
        yield Button("Save / insert…", id=f"save-{self.index}", classes="code-save", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        action = "copy" if event.button.has_class("code-copy") else "save"
        self.post_message(self.Action(action, self.block, self.reply))


class AssistantMessage(Vertical):
    """A reply streamed in place as Markdown; when it is complete, its code blocks' actions.

    Two things keep the cost per token flat as a reply grows: Textual's MarkdownStream
    parses only the new tail and coalesces fragments that arrive while the UI is busy;
    and every ``SEGMENT_BLOCKS`` finished blocks (split at a blank line outside a code
    fence by :class:`~starchat_cli.chat.codeblocks.BlockSplitter`) the stream moves on to a
    fresh Markdown widget, so neither the parser's document nor the widget being
    re-laid out keeps growing.
    """

    SEGMENT_BLOCKS = 16

    def __init__(self, text: str = "", *, model: str = "", stopped: bool = False) -> None:
        super().__init__(classes="message assistant")
        self.border_title = model or "assistant"
        self.text = text
        self.stopped = stopped
        self._stream: MarkdownStream | None = None
        self._splitter: BlockSplitter | None = None
        self._segment_blocks = 0
        self.blocks: list[CodeBlock] = []

    def compose(self) -> ComposeResult:
        yield Markdown(self.text, classes="reply-body")

    @property
    def body(self) -> Markdown:
        return self.query(".reply-body").last(Markdown)

    def start_stream(self) -> None:
        self.add_class("-streaming")
        self._splitter = BlockSplitter()
        self._segment_blocks = 0
        self._stream = Markdown.get_stream(self.body)

    async def append(self, text: str) -> None:
        self.text += text
        if self._stream is None or self._splitter is None:
            return
        finished = self._splitter.feed(text)
        self._segment_blocks += len(finished)
        pending = self._splitter.pending
        if finished and self._segment_blocks >= self.SEGMENT_BLOCKS and len(pending) <= len(text):
            # The finished blocks end inside this fragment: close the segment there.
            cut = len(text) - len(pending)
            await self._stream.write(text[:cut])
            await self._stream.stop()
            segment = Markdown("", classes="reply-body")
            await self.mount(segment)
            self._stream = Markdown.get_stream(segment)
            self._segment_blocks = 0
            text = pending
        await self._stream.write(text)

    async def finish(self, stopped: bool) -> None:
        """End streaming; mark a stopped reply; add actions for each code block."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self._splitter = None
        self.remove_class("-streaming")
        self.stopped = stopped
        await self.show_extras()

    async def show_extras(self) -> None:
        if self.stopped:
            self.add_class("-stopped")
            self.border_subtitle = "stopped"
        self.blocks = extract_code_blocks(self.text)
        rows = [
            CodeActions(i + 1, b, self.text, suggest(self.text, b))
            for i, b in enumerate(self.blocks)
            if b.code.strip()
        ]
        if rows:
            await self.mount_all(rows)


class StatusBar(Static):
    """Model · context use · speed of the last reply · session."""

    def show(
        self,
        *,
        model: str,
        used: int = 0,
        n_ctx: int = 0,
        tps: float = 0.0,
        session: str = "",
        state: str = "",
        cached: int = 0,
    ) -> None:
        parts = [model]
        parts.append(f"ctx {used:,}/{n_ctx:,}" if n_ctx else "ctx –")
        if cached:
            parts.append(f"{cached:,} cached")
        parts.append(f"{tps:.1f} tok/s" if tps else "– tok/s")
        if state:
            parts.append(state)
        if session:
            parts.append(session)
        self.update(" │ ".join(parts))
