"""Turning piped or attached input into prompt text: binary checks and language guessing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starchat_cli.core.errors import InputError

_EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "jsx",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".rs": "rust",
    ".go": "go",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".java": "java",
    ".kt": "kotlin",
    ".swift": "swift",
    ".rb": "ruby",
    ".php": "php",
    ".cs": "csharp",
    ".scala": "scala",
    ".sh": "bash",
    ".bash": "bash",
    ".zsh": "zsh",
    ".fish": "fish",
    ".ps1": "powershell",
    ".sql": "sql",
    ".html": "html",
    ".htm": "html",
    ".css": "css",
    ".scss": "scss",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".xml": "xml",
    ".md": "markdown",
    ".lua": "lua",
    ".r": "r",
    ".jl": "julia",
    ".hs": "haskell",
    ".ml": "ocaml",
    ".ex": "elixir",
    ".exs": "elixir",
    ".erl": "erlang",
    ".dart": "dart",
    ".vue": "vue",
    ".tf": "hcl",
    ".dockerfile": "dockerfile",
    ".ini": "ini",
    ".cfg": "ini",
    ".diff": "diff",
    ".patch": "diff",
    ".pl": "perl",
    ".zig": "zig",
    ".nim": "nim",
    ".m": "objectivec",
}
_NAMES = {"dockerfile": "dockerfile", "makefile": "makefile", "cmakelists.txt": "cmake"}

_SHEBANGS = (
    (re.compile(r"python"), "python"),
    (re.compile(r"\b(bash|sh|zsh|dash|ksh)\b"), "bash"),
    (re.compile(r"\b(node|deno|bun)\b"), "javascript"),
    (re.compile(r"\bruby\b"), "ruby"),
    (re.compile(r"\bperl\b"), "perl"),
    (re.compile(r"\bphp\b"), "php"),
)

# (language, pattern) in order: the first language whose pattern matches wins. Each
# pattern is anchored at a line start so prose that mentions a keyword does not count.
_CONTENT_RULES = (
    ("php", re.compile(r"^<\?php", re.M)),
    ("html", re.compile(r"^\s*<(!DOCTYPE html|html\b|head\b|body\b|div\b)", re.I | re.M)),
    ("diff", re.compile(r"^(diff --git |--- a/.*\n\+\+\+ b/|@@ -\d+(,\d+)? \+\d+)", re.M)),
    (
        "rust",
        re.compile(r"^\s*(pub\s+)?(fn\s+\w+\s*(<[^>]*>)?\(|use\s+(std|crate)::|impl\b|let\s+mut\s)", re.M),
    ),
    ("go", re.compile(r"^package\s+\w+\s*$[\s\S]*^func\s", re.M)),
    (
        "cpp",
        re.compile(
            r"^\s*(#include\s*<(iostream|vector|string|map|memory)>|template\s*<|std::|namespace\s+\w+\s*\{)",
            re.M,
        ),
    ),
    ("c", re.compile(r"^\s*#include\s*[<\"]", re.M)),
    (
        "java",
        re.compile(r"^\s*(public\s+)?(final\s+)?class\s+\w+[\s\S]*(public|private)\s+(static\s+)?\w+", re.M),
    ),
    (
        "python",
        re.compile(
            r"^\s*(def\s+\w+\s*\(.*\)\s*(->.*)?:|class\s+\w+(\(.*\))?:|from\s+[\w.]+\s+import\s|import\s+\w+(\s+as\s+\w+)?\s*$|if\s+__name__\s*==)",
            re.M,
        ),
    ),
    (
        "typescript",
        re.compile(
            r"^\s*(export\s+)?(interface|type)\s+\w+\s*[={<]|:\s*(string|number|boolean)\b[^\n]*[;=)]", re.M
        ),
    ),
    (
        "javascript",
        re.compile(
            r"^\s*(const|let|var)\s+\w+\s*=|^\s*function\s+\w+\s*\(|=>\s*\{|require\(['\"]|^\s*export\s+(default\s+)?(function|const|class)",
            re.M,
        ),
    ),
    (
        "sql",
        re.compile(
            r"^\s*(SELECT\s[\s\S]+\sFROM\s|CREATE\s+TABLE|INSERT\s+INTO|UPDATE\s+\w+\s+SET)", re.I | re.M
        ),
    ),
    ("bash", re.compile(r"^\s*(if\s+\[|for\s+\w+\s+in\s|echo\s|export\s+\w+=|fi\s*$)", re.M)),
    ("yaml", re.compile(r"\A(---\s*\n)?(\w[\w-]*:( .*)?\n)+", re.M)),
    ("toml", re.compile(r"^\[[\w.\-]+\]\s*$[\s\S]*^\w[\w-]*\s*=", re.M)),
)


def language_for_path(path: str | Path) -> str:
    p = Path(path)
    return _NAMES.get(p.name.lower()) or _EXTENSIONS.get(p.suffix.lower(), "")


def guess_language(text: str, filename: str | None = None) -> str:
    """A best guess at the fence language of ``text``; "" when nothing fits."""
    if filename:
        by_name = language_for_path(filename)
        if by_name:
            return by_name
    stripped = text.lstrip()
    first = stripped.split("\n", 1)[0]
    if first.startswith("#!"):
        for pattern, lang in _SHEBANGS:
            if pattern.search(first):
                return lang
    if stripped[:1] in "{[":
        try:
            json.loads(stripped)
            return "json"
        except ValueError:
            pass
    sample = text[:20000]
    for lang, pattern in _CONTENT_RULES:
        if pattern.search(sample):
            return lang
    return ""


def decode_text(data: bytes, source: str) -> str:
    """Bytes from stdin or a file as text; binary data is an :class:`InputError`."""
    if b"\x00" in data[:65536]:
        raise InputError(f"{source} looks binary (it has NUL bytes): pass text, e.g. source code or a log")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{source} is not UTF-8 text (bad byte at offset {exc.start}): "
            "convert it first, e.g. iconv -t utf-8"
        ) from None
    return text.replace("\r\n", "\n")
