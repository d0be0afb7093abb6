"""Conversations: sessions (SQLite), the conversation service, code blocks, prompt inputs."""
