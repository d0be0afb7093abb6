"""Whole-file rewrites: the prompt that asks for one, and the checks on what comes back.

The edit format is the whole new file in one fenced block: local models, the StarChat
family included, follow it far more reliably than search/replace or diff formats (which
they tend to garble: wrong anchors, unbalanced markers). What can go wrong with a whole
file is well known and checked here before anything is written:

- the reply has no code block (:class:`~starchat_cli.core.errors.NoCodeError`);
- the rewrite elides code: ``# ... rest unchanged``, ``// ... existing code ...``, a bare
  ``...`` line where code was, or a large deletion the instruction did not ask for
  (:class:`ElidedCodeError`);
- the reply was cut off before the block closed (:class:`ElidedCodeError` too).

Nothing here talks to a model: :mod:`starchat_cli.services.edit` does that.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from starchat_cli.chat.codeblocks import CodeBlock, extract_code_blocks
from starchat_cli.chat.inputs import language_for_path
from starchat_cli.core.errors import NoCodeError, NotAppliedError
from starchat_cli.engine.prompting.attachment import fence_for


class ElidedCodeError(NotAppliedError):
    """The rewrite leaves code out (a placeholder, a large deletion, a cut-off reply): not written."""


@dataclass(frozen=True)
class ContextFile:
    """A file shown to the model for reference only."""

    path: str  # as shown in the prompt (relative to the working directory when inside it)
    text: str


# -- the prompt ------------------------------------------------------------------------------


def fenced(path: str, text: str) -> str:
    """``path`` then its text in a fenced block tagged with its language."""
    fence = fence_for(text)
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"`{path}`:\n{fence}{language_for_path(path)}\n{body}{fence}"


def build_prompt(path: str, text: str, instruction: str, context: tuple[ContextFile, ...] = ()) -> str:
    """The user message for a whole-file rewrite: context files, the file, the instruction, the format."""
    parts: list[str] = []
    if context:
        parts.append("Other files, for reference only (do not rewrite them):")
        parts.extend(fenced(c.path, c.text) for c in context)
    parts.append(f"The file to edit:\n{fenced(path, text)}")
    parts.append(f"Task: {instruction.strip()}")
    lang = language_for_path(path)
    parts.append(
        f"Reply with the complete new version of `{path}` in a single ```{lang} code block: every line of "
        "the file, also the lines that do not change, with none left out or replaced by a comment. "
        "Write nothing after the code block."
    )
    return "\n\n".join(parts)


# -- the reply -------------------------------------------------------------------------------

_LANG_ALIASES = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "ts": "typescript",
    "sh": "bash",
    "shell": "bash",
    "zsh": "bash",
    "c++": "cpp",
    "rs": "rust",
    "rb": "ruby",
    "yml": "yaml",
    "golang": "go",
}


def _norm(lang: str) -> str:
    lang = lang.strip().lower()
    return _LANG_ALIASES.get(lang, lang)


def pick_block(reply: str, path: str) -> CodeBlock:
    """The code block that is the new file: the only one, else the last large one in the file's language."""
    blocks = [b for b in extract_code_blocks(reply) if b.code.strip()]
    if not blocks:
        raise NoCodeError(
            "the reply has no fenced code block with the new file (it is shown above): nothing written; "
            "try again, rephrase the instruction, or use a larger model"
        )
    if len(blocks) == 1:
        return blocks[0]
    want = _norm(language_for_path(path))
    name = path.rsplit("/", 1)[-1]
    matching = [b for b in blocks if (want and _norm(b.language) == want) or (name and name in b.info)]
    candidates = matching or blocks
    largest = max(len(b.code) for b in candidates)
    # The last of the big ones: a reply that quotes the file first and then rewrites it ends with the rewrite.
    return [b for b in candidates if len(b.code) >= 0.8 * largest][-1]


def new_text_from(block: CodeBlock, old_text: str) -> str:
    """The block's code as the new file text, keeping the old file's (missing) final newline."""
    code = block.code.replace("\r\n", "\n")
    if old_text and not old_text.endswith("\n") and code.endswith("\n"):
        code = code[:-1]
    return code


# -- guards ----------------------------------------------------------------------------------

_COMMENT = r"(?:#|//|/\*|<!--|--|;|\*|%|\{/\*)"
_ELLIPSIS = r"(?:\.{3,}|…)"
_ELIDED_WORDS = (
    r"(?:rest|remaining|remainder|existing|unchanged|same|omitted|omit|previous|as before|as is|etc|snip)"
)
# A line that is only an ellipsis, maybe inside a comment: "...", "# ...", "// …", "/* ... */".
_BARE_RE = re.compile(rf"^\s*{_COMMENT}?\s*{_ELLIPSIS}\s*(?:\*/|-->|\*\}})?\s*$")
# A comment with an ellipsis and a word saying code was left out ("# ... rest unchanged"), or a
# short comment between two ellipses ("// ... more handlers ...").
_MARKER_RE = re.compile(
    rf"^\s*{_COMMENT}.*(?:{_ELLIPSIS}.*\b{_ELIDED_WORDS}\b|\b{_ELIDED_WORDS}\b.*{_ELLIPSIS})"
    rf"|^\s*{_COMMENT}\s*\(?{_ELLIPSIS}.{{1,50}}{_ELLIPSIS}",
    re.I,
)
# A comment that says so without an ellipsis: "# rest of the file unchanged", "// existing code".
_PHRASE_RE = re.compile(
    rf"^\s*{_COMMENT}\s*\(?\s*(?:the\s+)?(?:rest\s+of\s+(?:the\s+)?(?:file|code|class|function|module)|"
    r"remaining\s+(?:code|lines|functions|methods)|existing\s+code|(?:code|lines|everything\s+else)\s+"
    r"(?:unchanged|omitted|as\s+before)|unchanged\s+(?:code|lines)|(?:same|unchanged)\s+as\s+before|"
    r"(?:other|remaining)\s+(?:code|methods|functions)\s+(?:unchanged|here|omitted)|"
    r"(?:(?:your|the|new|updated|more|other)\s+)?code\s+(?:goes\s+)?here\b|(?:insert|add|put)\s+(?:your\s+)?code)",
    re.I,
)
# The instruction asks to take things out: a large deletion is then expected.
_DELETE_RE = re.compile(
    r"\b(?:delet\w*|remov\w*|drop\w*|strip\w*|trim\w*|cut\w*|eras\w*|purg\w*|prun\w*|shorten\w*|"
    r"simplif\w*|condens\w*|clean\w*|get\s+rid|take\s+out|only\s+keep|keep\s+only|dedup\w*|"
    r"minif\w*|collaps\w*|merg\w*|consolidat\w*)\b",
    re.I,
)

DELETION_SHARE = 1 / 3  # more than this share of the lines gone is "a large deletion"
DELETION_MIN_LINES = 6  # a file shorter than this is never judged by its deletions


def elision_marker(line: str) -> bool:
    """Whether ``line`` is a placeholder standing for code left out."""
    return bool(_BARE_RE.match(line) or _MARKER_RE.search(line) or _PHRASE_RE.search(line))


def check_rewrite(old_text: str, new_text: str, instruction: str, *, cut_off: bool = False) -> None:
    """Raise :class:`ElidedCodeError` when the rewrite leaves code out; return quietly otherwise."""
    if cut_off:
        raise ElidedCodeError(
            "the reply was cut off before the end of the file (see the diff): nothing written; "
            "raise --max-tokens or --ctx"
        )
    old_lines = old_text.splitlines()
    new_lines = new_text.splitlines()
    added = Counter(new_lines) - Counter(
        old_lines
    )  # lines new in the rewrite (markers already there are code)
    for line in new_lines:
        if added.get(line) and elision_marker(line):
            raise ElidedCodeError(
                f"the rewrite leaves code out ({line.strip()!r} stands for lines it did not write): "
                "nothing written; try again, or make the instruction smaller"
            )
    if old_text.strip() and not new_text.strip() and not _DELETE_RE.search(instruction):
        raise ElidedCodeError("the rewrite is empty: nothing written; say what to delete if that is intended")
    gone = len(old_lines) - len(new_lines)
    if (
        len(old_lines) >= DELETION_MIN_LINES
        and gone > len(old_lines) * DELETION_SHARE
        and not _DELETE_RE.search(instruction)
    ):
        raise ElidedCodeError(
            f"the rewrite drops {gone} of {len(old_lines)} lines, which the instruction does not ask for: "
            "nothing written; say what to delete if that is intended, or try again"
        )


__all__ = [
    "ContextFile",
    "ElidedCodeError",
    "build_prompt",
    "check_rewrite",
    "elision_marker",
    "fenced",
    "new_text_from",
    "pick_block",
]
