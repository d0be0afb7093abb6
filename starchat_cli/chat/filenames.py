"""The file name a reply proposes for one of its code blocks (``# file: app.py`` and the like)."""

from __future__ import annotations

import re
from pathlib import Path

_PATHLIKE = r"[\w.\-/~]*[\w\-]\.[A-Za-z0-9_]{1,10}|[\w.\-/~]*(?:Makefile|Dockerfile|Rakefile|Gemfile)"
_COMMENT_NAME = re.compile(
    r"^\s*(?:#|//|--|;|/\*|<!--|%)\s*(?:file(?:name)?|path)\s*:\s*(" + _PATHLIKE + r")", re.I
)
_BEFORE_FENCE = re.compile(
    r"^\s*(?:#+\s*)?(?:[-*]\s*)?(?:\*\*|__)?(?:(?:file(?:name)?|path|in|save (?:it )?as|create)\s*:?\s*)?"
    r"[`*_]*(" + _PATHLIKE + r")[`*_]*\s*:?\s*(?:\*\*|__)?\s*$",
    re.I,
)
_INFO_NAME = re.compile(r"(?:title|file(?:name)?|path)=[\"']?(" + _PATHLIKE + r")", re.I)


def _clean(name: str) -> str | None:
    name = name.strip().strip("`'\"")
    if not name or name.startswith("/") or ".." in Path(name).parts or name.startswith("~"):
        return None  # only relative names inside the working tree are suggested
    if re.fullmatch(r"\d+(\.\d+)+", name):
        return None  # a version number, not a file
    return name


def suggest_filename(reply: str, block_start_line: int, code: str, info: str = "") -> str | None:
    """A file name the reply proposes for the block starting at ``block_start_line``, or None.

    Looks at a ``# file: app.py`` style comment on the block's first line, a
    ``title=app.py`` in the info string, and a path alone on the line just before the fence.
    """
    first = code.splitlines()[0] if code.strip() else ""
    m = _COMMENT_NAME.match(first)
    if m and (name := _clean(m.group(1))):
        return name
    m = _INFO_NAME.search(info)
    if m and (name := _clean(m.group(1))):
        return name
    for word in info.split()[1:]:
        if re.fullmatch(_PATHLIKE, word) and (name := _clean(word)):
            return name
    lines = reply.splitlines()
    i = block_start_line - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i >= 0:
        m = _BEFORE_FENCE.match(lines[i])
        if m and (name := _clean(m.group(1))):
            return name
    return None
