"""Planning a file edit: what a file becomes when a code block goes in, with nothing written.

    plan = plan_edit("app.py", code, "after", anchor="import os")  # nothing written yet
    print(plan.diff())                                              # show it, ask the user
    apply_edit(plan, UndoJournal())                                 # starchat_cli.edits.apply

A plan keeps what the write must reproduce: the file's encoding (UTF-8 with or without BOM,
UTF-16 with BOM, else Latin-1 byte for byte), its line endings (CRLF stays CRLF) and the
snapshot its diff was made from. Binary files are refused, and so is anything that is not a
regular file (a named pipe, a device), before it is opened. A read-only file is refused as an
editor refuses it (the rename would replace it whatever its mode) unless ``force=True``.
Paths outside the working directory need ``allow_outside=True`` (the face asks the user
first). :meth:`EditPlan.patch` is the diff as bytes that ``git apply`` / ``patch -p1`` apply
to the file as it is on disk.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from starchat_cli.edits.errors import EditError, OutsideRootError, ReadOnlyFileError
from starchat_cli.edits.textfile import Snapshot, encode_text, read_text_file, regular_file

Mode = Literal["new", "insert", "after", "append", "replace", "range"]
MODES: tuple[str, ...] = ("new", "insert", "after", "append", "replace", "range")
MODE_HELP = {
    "new": "save as a new file",
    "insert": "insert before line N",
    "after": "insert after the line matching an anchor",
    "append": "append at the end",
    "replace": "replace the whole file",
    "range": "replace lines A-B",
}


# -- paths ---------------------------------------------------------------------------------


def resolve_target(path: str | os.PathLike[str], root: Path | None = None) -> tuple[Path, bool]:
    """The absolute target (symlinks resolved) and whether it lies inside ``root`` (default: cwd)."""
    root = (root or Path.cwd()).resolve()
    raw = Path(os.path.expanduser(os.fspath(path)))
    target = raw if raw.is_absolute() else root / raw
    try:
        target = target.resolve()
    except (RuntimeError, OSError):  # a symlink loop: reading it says so (ELOOP)
        target = Path(os.path.abspath(target))
    try:
        target.relative_to(root)
        inside = True
    except ValueError:
        inside = False
    return target, inside


# -- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditPlan:
    path: Path
    mode: str
    old_text: str  # "\n" line endings
    new_text: str
    encoding: str
    newline: str
    snapshot: Snapshot
    inside_root: bool
    display_path: str
    old_bytes: bytes | None = None  # the file as read (None: encode old_text back)

    @property
    def creates(self) -> bool:
        return not self.snapshot.exists

    def new_bytes(self) -> bytes:
        return encode_text(self.new_text.replace("\n", self.newline), self.encoding)

    def patch(self, context: int = 3) -> bytes:
        """The unified diff as bytes that apply to the file on disk (``git apply``, ``patch -p1``).

        Made from the bytes, not the text: CRLF stays in every line, Latin-1 stays Latin-1,
        the BOM stays on line 1, and a last line without a newline is marked as diff marks it.
        """
        if self.encoding.startswith("utf-16"):
            raise EditError(
                f"{self.display_path} is UTF-16: no line patch applies to it; use --json for the diff, "
                "or write it with --yes"
            )
        if self.old_bytes is not None:
            old = self.old_bytes
        else:
            old = (
                b"" if self.creates else encode_text(self.old_text.replace("\n", self.newline), self.encoding)
            )
        name = os.fsencode(self.display_path)
        lines = difflib.diff_bytes(
            difflib.unified_diff,
            _byte_lines(old),
            _byte_lines(self.new_bytes()),
            fromfile=b"/dev/null" if self.creates else b"a/" + name,
            tofile=b"b/" + name,
            n=context,
        )
        out = []
        for line in lines:
            out.append(line)
            if not line.endswith(b"\n"):
                out.append(b"\n\\ No newline at end of file\n")
        return b"".join(out)

    def diff(self, context: int = 3) -> str:
        name = self.display_path
        return "".join(
            difflib.unified_diff(
                self.old_text.splitlines(keepends=True),
                self.new_text.splitlines(keepends=True),
                fromfile="/dev/null" if self.creates else f"a/{name}",
                tofile=f"b/{name}",
                n=context,
            )
        )

    def summary(self) -> str:
        old = len(self.old_text.splitlines())
        new = len(self.new_text.splitlines())
        verb = "create" if self.creates else "change"
        return f"{verb} {self.display_path}: {old} → {new} lines ({MODE_HELP[self.mode]})"


def _byte_lines(data: bytes) -> list[bytes]:
    """``data`` cut after each ``\n`` only (a ``\r`` stays inside its line, as git sees it)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def find_anchor(lines: list[str], anchor: str) -> int:
    """Index of the line matching ``anchor``: an exact (stripped) match first, else a unique substring."""
    want = anchor.strip()
    if not want:
        raise EditError("the anchor is empty: give the text of the line to insert after")
    exact = [i for i, line in enumerate(lines) if line.strip() == want]
    if exact:
        return exact[0]
    partial = [i for i, line in enumerate(lines) if want in line]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise EditError(f"no line matches the anchor {want!r}")
    shown = ", ".join(str(i + 1) for i in partial[:5])
    raise EditError(f"the anchor {want!r} matches lines {shown}: make it longer, or insert at a line number")


def parse_range(text: str) -> tuple[int, int]:
    """``"10-20"`` (or ``10:20``, ``10,20``, ``10``) as the pair (10, 20)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[-:,]\s*(\d+))?\s*", text or "")
    if not m:
        raise EditError(f"bad line range {text!r}: write A-B, e.g. 10-20")
    a = int(m.group(1))
    b = int(m.group(2) or a)
    return a, b


def plan_edit(
    path: str | os.PathLike[str],
    code: str,
    mode: str,
    *,
    line: int | None = None,
    anchor: str | None = None,
    line_range: tuple[int, int] | None = None,
    root: Path | None = None,
    allow_outside: bool = False,
    force: bool = False,
) -> EditPlan:
    """What the file would become; nothing is written. Raises EditError with the reason
    (a read-only file too, unless ``force``)."""
    if mode not in MODES:
        raise EditError(f"unknown insert mode {mode!r}: one of {', '.join(MODES)}")
    if not os.fspath(path).strip():
        raise EditError("no file name given")
    target, inside = resolve_target(path, root)
    if not inside and not allow_outside:
        raise OutsideRootError(f"{target} is outside the working directory {(root or Path.cwd()).resolve()}")
    try:
        display = str(target.relative_to((root or Path.cwd()).resolve()))
    except ValueError:
        display = str(target)
    code = code.replace("\r\n", "\n")
    if code and not code.endswith("\n"):
        code += "\n"
    if regular_file(target, display) is None:  # a folder, a pipe, a device: refused unopened
        if mode not in ("new", "append", "replace"):
            raise EditError(f"{display} does not exist: save the block as a new file instead")
        return EditPlan(target, "new", "", code, "utf-8", "\n", Snapshot(False), inside, display)
    if mode == "new":
        raise EditError(f"{display} already exists: choose another name, or insert into it")
    if not force:
        check_writable(target, display)
    current = read_text_file(target, display)
    lines = _lines(current.text)
    if mode == "append":
        new = lines + [code]
    elif mode == "replace":
        new = [code]
    elif mode == "insert":
        if line is None or not 1 <= line <= len(lines) + 1:
            raise EditError(f"line must be between 1 and {len(lines) + 1} for {display}")
        new = lines[: line - 1] + [code] + lines[line - 1 :]
    elif mode == "after":
        at = find_anchor(lines, anchor or "")
        new = lines[: at + 1] + [code] + lines[at + 1 :]
    else:  # range
        if line_range is None:
            raise EditError("give the line range to replace, e.g. 10-20")
        a, b = line_range
        if not (1 <= a <= b <= len(lines)):
            raise EditError(f"line range {a}-{b} is outside {display} (lines 1-{len(lines)})")
        new = lines[: a - 1] + [code] + lines[b:]
    new_text = "".join(new)
    if current.text and not current.text.endswith("\n") and mode in ("insert", "after", "range"):
        # Keep a file that had no final newline without one (unless the block was appended).
        if new_text.endswith("\n") and new[-1] is not code:
            new_text = new_text[:-1]
    return EditPlan(
        target,
        mode,
        current.text,
        new_text,
        current.encoding,
        current.newline,
        current.snapshot,
        inside,
        display,
        current.data,
    )


# -- permissions ---------------------------------------------------------------------------------


def read_only(st: os.stat_result) -> bool:
    """Whether the mode keeps this user from writing the file.

    Root, whom the kernel lets write anything, goes by the write bits as an editor does:
    a 0444 file is read-only to root too.
    """
    mode = st.st_mode
    euid = os.geteuid() if hasattr(os, "geteuid") else 0  # Windows: the read-only attribute is the bits
    if euid == 0:
        return not mode & 0o222
    if st.st_uid == euid:
        return not mode & stat.S_IWUSR
    if st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        return not mode & stat.S_IWGRP
    return not mode & stat.S_IWOTH


def check_writable(path: Path, display: str) -> None:
    """Raise ReadOnlyFileError when ``path`` is a read-only file.

    The atomic rename would replace it whatever its mode (only the folder's matters), so
    this check is what keeps a read-only file read-only. Nothing there is fine: it is created.
    """
    try:
        st = os.stat(path)
    except OSError:
        return  # missing or unreachable: the read or the write says why
    if stat.S_ISREG(st.st_mode) and read_only(st):
        raise ReadOnlyFileError(display, stat.S_IMODE(st.st_mode))
