"""The errors a file edit can end in: each message says why and what to do instead."""

from __future__ import annotations

from starchat_cli.core.errors import ExitCode, InputError, NotAppliedError


class EditError(NotAppliedError):
    """An edit that cannot be made; the message says why and what to do (exit 11: nothing written)."""


class BinaryFileError(EditError):
    """The file holds binary data: starchat edits text files only."""

    exit_code = ExitCode.INPUT


class UnreadableFileError(EditError, InputError):
    """Not a file starchat can read: a folder, a named pipe, a device, or one the user may not read.

    Bad input (exit 6) for the commands that read it, and an edit that cannot be made.
    """

    exit_code = ExitCode.INPUT


class ReadOnlyFileError(EditError):
    """The file is read-only: an editor refuses to write it too, unless forced (exit 11).

    Each face names its own way to force it: :meth:`with_fix`.
    """

    def __init__(self, display: str, mode: int, fix: str = "make it writable first (chmod u+w)") -> None:
        super().__init__(f"{display} is read-only (mode {mode:04o}): nothing written; {fix}")
        self.display, self.mode = display, mode

    def with_fix(self, fix: str) -> ReadOnlyFileError:
        return ReadOnlyFileError(self.display, self.mode, fix)


class FileChangedError(EditError):
    """The file changed on disk since the diff was shown (or since starchat wrote it)."""


class OutsideRootError(EditError):
    """The target lies outside the working directory and that was not allowed."""


class NothingToUndoError(EditError):
    """The undo journal holds no write that can still be undone."""
