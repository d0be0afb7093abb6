"""Markdown helpers that need no renderer: fenced code blocks and stream splitting.

Fences follow CommonMark: three or more backticks or tildes, indented at most three
spaces; a block closes at a fence of the same character at least as long, with no info
string. A fence left open at the end of a reply (a cut-off answer) runs to the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class CodeBlock:
    language: str  # the first word of the info string, "" when none
    code: str  # the block's text, ending with a newline unless empty
    info: str  # the whole info string, e.g. "python title=app.py"
    start_line: int  # 0-based line of the opening fence in the reply
    closed: bool


def _opening(line: str) -> tuple[str, int, str] | None:
    m = _FENCE_RE.match(line.rstrip("\r\n"))
    if not m:
        return None
    fence, info = m.group(2), m.group(3).strip()
    if fence[0] == "`" and "`" in info:
        return None  # not a fence: backtick info strings may not contain backticks
    return fence, len(m.group(1)), info


def _closes(line: str, fence: str) -> bool:
    m = _FENCE_RE.match(line.rstrip("\r\n"))
    return bool(m and m.group(2)[0] == fence[0] and len(m.group(2)) >= len(fence) and not m.group(3).strip())


def _strip_indent(line: str, indent: int) -> str:
    n = 0
    while n < indent and n < len(line) and line[n] == " ":
        n += 1
    return line[n:]


def extract_code_blocks(text: str) -> list[CodeBlock]:
    """All fenced code blocks of a Markdown text, in order."""
    blocks: list[CodeBlock] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        opened = _opening(lines[i])
        if not opened:
            i += 1
            continue
        fence, indent, info = opened
        start = i
        body: list[str] = []
        i += 1
        closed = False
        while i < len(lines):
            if _closes(lines[i], fence):
                closed = True
                i += 1
                break
            body.append(_strip_indent(lines[i], indent))
            i += 1
        code = "".join(body)
        if code and not code.endswith("\n"):
            code += "\n"
        blocks.append(
            CodeBlock(
                language=info.split()[0] if info else "",
                code=code,
                info=info,
                start_line=start,
                closed=closed,
            )
        )
    return blocks


class CodeStream:
    """Streams only the code inside fenced blocks, line by line, as the reply arrives.

    Blocks are separated by one blank line. ``found`` tells whether any block was seen.
    """

    def __init__(self) -> None:
        self._line = ""
        self._fence: str | None = None
        self._indent = 0
        self.found = False
        self._blocks_done = 0

    def _line_out(self, line: str) -> str:
        if self._fence is None:
            opened = _opening(line)
            if opened:
                self._fence, self._indent, _ = opened
                self.found = True
                return "\n" if self._blocks_done else ""
            return ""
        if _closes(line, self._fence):
            self._fence = None
            self._blocks_done += 1
            return ""
        return _strip_indent(line, self._indent)

    def feed(self, text: str) -> str:
        self._line += text
        out = []
        while True:
            nl = self._line.find("\n")
            if nl == -1:
                break
            line, self._line = self._line[: nl + 1], self._line[nl + 1 :]
            out.append(self._line_out(line))
        return "".join(out)

    def flush(self) -> str:
        line, self._line = self._line, ""
        if not line:
            return ""
        out = self._line_out(line)
        if out and self._fence is not None and not out.endswith("\n"):
            out += "\n"
        return out


class BlockSplitter:
    """Splits a streaming Markdown reply into finished blocks and the block in progress.

    A block finishes at a blank line outside a code fence, or at a closing fence. A
    renderer prints finished blocks once and redraws only the one in progress, so the
    cost per token does not grow with the length of the reply.
    """

    def __init__(self) -> None:
        self._done_upto = 0  # index in _text where the unfinished block starts
        self._scan = 0  # index of the first line not yet classified
        self._text = ""
        self._fence: str | None = None

    @property
    def pending(self) -> str:
        return self._text[self._done_upto :]

    def feed(self, text: str) -> list[str]:
        self._text += text
        finished: list[str] = []
        while True:
            nl = self._text.find("\n", self._scan)
            if nl == -1:
                break
            line = self._text[self._scan : nl + 1]
            line_end = nl + 1
            self._scan = line_end
            if self._fence is not None:
                if _closes(line, self._fence):
                    self._fence = None
                    finished.append(self._text[self._done_upto : line_end])
                    self._done_upto = line_end
                continue
            opened = _opening(line)
            if opened:
                # A fence starts a block of its own: flush the paragraph before it.
                before = self._text[self._done_upto : line_end - len(line)]
                if before.strip():
                    finished.append(before)
                    self._done_upto = line_end - len(line)
                self._fence = opened[0]
            elif not line.strip():
                block = self._text[self._done_upto : line_end]
                if block.strip():
                    finished.append(block)
                self._done_upto = line_end
        # Keep only the unfinished block, so memory and copying stay bounded.
        self._text = self._text[self._done_upto :]
        self._scan -= self._done_upto
        self._done_upto = 0
        return finished

    def flush(self) -> str:
        rest = self.pending
        self._done_upto = len(self._text)
        self._scan = len(self._text)
        return rest
