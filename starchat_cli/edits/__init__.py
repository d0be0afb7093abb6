"""File edits: the file-writing half of `starchat edit` and of the chat's code-block insertion.

    from starchat_cli.edits.plan import plan_edit     # what the file becomes; nothing written
    from starchat_cli.edits.apply import apply_edit   # atomic write, journalled, refused if changed
    from starchat_cli.edits.undo import UndoJournal   # puts the last write back, even after a restart

Beside them: ``textfile`` (bytes <-> text keeping encoding and line endings, snapshots),
``rewrite`` (the whole-file rewrite prompt and its guards) and ``errors``. Each name has one
home; this package re-exports nothing.
"""
