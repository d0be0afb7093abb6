"""Writing a planned edit: atomic, journalled for undo, refused if the file changed since its diff.

    plan = plan_edit("app.py", code, "append")   # starchat_cli.edits.plan: nothing written yet
    entry = apply_edit(plan, UndoJournal())      # the write, recorded before it is made
    UndoJournal().undo()                         # restores the previous content

Every write is atomic (temp file + rename) and keeps the file's permissions. A file that
changed on disk after its diff was shown (mtime, size or content hash differ) is refused, and
so is a read-only one unless ``force=True`` (then it is written and keeps its mode). The undo
journal lives under the data dir, so ``/undo`` and ``starchat undo`` work after a restart.
"""

from __future__ import annotations

import os

from starchat_cli.core.fsutil import atomic_write_bytes
from starchat_cli.edits.errors import FileChangedError
from starchat_cli.edits.plan import EditPlan, check_writable
from starchat_cli.edits.textfile import snapshot
from starchat_cli.edits.undo import JournalEntry, UndoJournal


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_unchanged(plan: EditPlan) -> None:
    """Raise FileChangedError when the file is no longer what the plan's diff was made from."""
    now = snapshot(plan.path)
    if now != plan.snapshot:
        if not plan.snapshot.exists:
            raise FileChangedError(
                f"{plan.display_path} was created by something else after the preview: nothing written"
            )
        if not now.exists:
            raise FileChangedError(f"{plan.display_path} was deleted after the preview: nothing written")
        raise FileChangedError(
            f"{plan.display_path} changed on disk after the diff was shown: nothing written; preview it again"
        )


def apply_edit(
    plan: EditPlan, journal: UndoJournal | None = None, *, force: bool = False
) -> JournalEntry | None:
    """Write the plan atomically after checking the file is as it was when the diff was shown,
    and is not read-only (unless ``force``: then it is written and keeps its mode)."""
    check_unchanged(plan)
    if not force:
        check_writable(plan.path, plan.display_path)
    data = plan.new_bytes()
    previous = plan.path.read_bytes() if plan.snapshot.exists else None
    entry = journal.record(plan, previous, data) if journal is not None else None
    atomic_write_bytes(plan.path, data)
    if previous is None:
        os.chmod(plan.path, _default_mode())  # the temp file was private (0600)
    return entry
