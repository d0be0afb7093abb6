"""Conversations: sessions (SQLite), the conversation service, code blocks, file edits and undo."""
