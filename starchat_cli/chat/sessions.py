"""Chat sessions in SQLite: one file under the data dir, WAL mode, FTS5 search.

    store = SessionStore()                      # Paths.sessions_db, migrated on open
    s = store.create("demo", system="You are...")
    store.add_message(s.id, "user", "hi")       # committed at once: durable after return
    store.add_message(s.id, "assistant", "hel", stopped=True)
    store.search("hel")                         # FTS5 over every message

Each message is written (and committed) when it completes, so a crash or ``kill -9``
loses at most the reply in flight. The schema changes only through the functions in
``MIGRATIONS``; each one's name is recorded in ``_migrations`` once applied.
"""

from __future__ import annotations

import builtins
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from starchat_cli.core.errors import StarchatError
from starchat_cli.core.fsutil import atomic_write_text
from starchat_cli.core.paths import get_paths


class SessionNotFoundError(StarchatError):
    pass


@dataclass(frozen=True)
class Session:
    id: str
    title: str
    model: str
    system: str | None
    created: float
    updated: float
    message_count: int = 0


@dataclass(frozen=True)
class StoredMessage:
    id: int
    session_id: str
    role: str  # user | assistant
    content: str
    stopped: bool
    created: float
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchHit:
    session_id: str
    title: str
    message_id: int
    role: str
    snippet: str  # the match with [brackets] around matched terms
    updated: float


# -- migrations ------------------------------------------------------------------------


def _m001_sessions_and_messages(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            system TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            stopped INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX messages_by_session ON messages(session_id, id)")
    db.execute("CREATE INDEX sessions_by_updated ON sessions(updated)")


def _m002_message_stats(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE messages ADD COLUMN stats TEXT NOT NULL DEFAULT '{}'")


def _m003_fts(db: sqlite3.Connection) -> None:
    # An external-content FTS5 index over message text, kept in step by triggers.
    db.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        "content, content='messages', content_rowid='id', tokenize='unicode61')"
    )
    db.execute(
        "CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END"
    )
    db.execute(
        "CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); END"
    )
    db.execute(
        "CREATE TRIGGER messages_au AFTER UPDATE ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END"
    )
    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = [
    _m001_sessions_and_messages,
    _m002_message_stats,
    _m003_fts,
]


def migrate(db: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; returns their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for fn in MIGRATIONS if migrations is None else migrations:
        name = fn.__name__.lstrip("_")
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            fn(db)
            db.execute("INSERT INTO _migrations(name, applied) VALUES (?, ?)", (name, time.time()))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(name)
    return applied


def applied_migrations(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY rowid")]


# -- the store ---------------------------------------------------------------------------


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: every word must match, as a literal (quoted) term.

    The last word also matches as a prefix, so results appear while typing.
    """
    words = [w.replace('"', '""') for w in text.split()]
    if not words:
        return ""
    terms = [f'"{w}"' for w in words]
    terms[-1] += "*"
    return " ".join(terms)


def title_from(text: str, limit: int = 60) -> str:
    line = " ".join(text.strip().split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# Annotations in SessionStore say `builtins.list`: its public `list` method shadows the builtin there.
class SessionStore:
    """Sessions and their messages; every write is committed before the method returns."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path is not None else get_paths().sessions_db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        try:
            # isolation_level=None: autocommit, transactions are explicit (BEGIN ... COMMIT).
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes in WAL mode
            self.db.execute("PRAGMA foreign_keys=ON")
            migrate(self.db)
        except sqlite3.DatabaseError as exc:
            raise StarchatError(
                f"cannot open the sessions database {self.path} ({exc}): move it aside to start afresh"
            ) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions ----------------------------------------------------------------
    def create(self, model: str, system: str | None = None, title: str = "") -> Session:
        now = self._clock()
        sid = secrets.token_hex(4)
        while self.db.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone():
            sid = secrets.token_hex(4)
        self.db.execute(
            "INSERT INTO sessions(id, title, model, system, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (sid, title, model, system, now, now),
        )
        return Session(sid, title, model, system, now, now, 0)

    def _row(self, row: tuple) -> Session:
        return Session(row[0], row[1], row[2], row[3], row[4], row[5], row[6])

    _SELECT = (
        "SELECT s.id, s.title, s.model, s.system, s.created, s.updated, "
        "(SELECT count(*) FROM messages m WHERE m.session_id = s.id) FROM sessions s"
    )

    def get(self, session_id: str) -> Session:
        """A session by id, or by a unique prefix of its id."""
        row = self.db.execute(self._SELECT + " WHERE s.id = ?", (session_id,)).fetchone()
        if row is None and session_id:
            rows = self.db.execute(
                self._SELECT + " WHERE s.id LIKE ? ESCAPE '\\'",
                (session_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            ).fetchall()
            if len(rows) > 1:
                raise SessionNotFoundError(f"session id '{session_id}' is ambiguous: give more characters")
            row = rows[0] if rows else None
        if row is None:
            raise SessionNotFoundError(
                f"no session '{session_id}': `starchat sessions list` shows the saved ones"
            )
        return self._row(row)

    def list(self, limit: int | None = None) -> builtins.list[Session]:
        sql = self._SELECT + " ORDER BY s.updated DESC, s.rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._row(r) for r in self.db.execute(sql)]

    def rename(self, session_id: str, title: str) -> Session:
        sid = self.get(session_id).id
        self.db.execute("UPDATE sessions SET title = ? WHERE id = ?", (title.strip(), sid))
        return self.get(sid)

    def update(self, session_id: str, *, model: str | None = None, system: str | None | object = ...) -> None:
        sid = self.get(session_id).id
        if model is not None:
            self.db.execute("UPDATE sessions SET model = ? WHERE id = ?", (model, sid))
        if system is not ...:
            self.db.execute("UPDATE sessions SET system = ? WHERE id = ?", (system, sid))

    def delete(self, session_id: str) -> None:
        sid = self.get(session_id).id
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM messages WHERE session_id = ?", (sid,))
        self.db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
        self.db.execute("COMMIT")

    # -- messages ----------------------------------------------------------------
    def add_message(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        stopped: bool = False,
        stats: dict[str, Any] | None = None,
    ) -> StoredMessage:
        """Save one complete message (a stopped reply too); committed when this returns."""
        if role not in ("user", "assistant"):
            raise ValueError(f"role must be user or assistant, not {role!r}")
        now = self._clock()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                "INSERT INTO messages(session_id, role, content, stopped, created, stats) VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, role, content, int(stopped), now, json.dumps(stats or {})),
            )
            if role == "user":
                # The first question names the session, unless the user already did.
                self.db.execute(
                    "UPDATE sessions SET title = ? WHERE id = ? AND title = ''",
                    (title_from(content), session_id),
                )
            self.db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return StoredMessage(cur.lastrowid or 0, session_id, role, content, stopped, now, stats or {})

    def messages(self, session_id: str) -> builtins.list[StoredMessage]:
        rows = self.db.execute(
            "SELECT id, session_id, role, content, stopped, created, stats FROM messages "
            "WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        return [
            StoredMessage(r[0], r[1], r[2], r[3], bool(r[4]), r[5], json.loads(r[6] or "{}")) for r in rows
        ]

    def search(self, text: str, limit: int = 50) -> builtins.list[SearchHit]:
        """Messages matching every word of ``text`` (FTS5), best first."""
        query = fts_query(text)
        if not query:
            return []
        rows = self.db.execute(
            "SELECT m.session_id, s.title, m.id, m.role, "
            "snippet(messages_fts, 0, '[', ']', '…', 12), s.updated "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "JOIN sessions s ON s.id = m.session_id "
            "WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?",
            (query, limit),
        )
        return [SearchHit(*row) for row in rows]

    def search_sessions(self, text: str, limit: int = 50) -> builtins.list[tuple[Session, str]]:
        """Sessions with a matching message (or title), each with its best snippet."""
        out: builtins.list[tuple[Session, str]] = []
        seen: set[str] = set()
        words = text.lower().split()
        for s in self.list():
            if words and all(w in s.title.lower() for w in words):
                out.append((s, s.title))
                seen.add(s.id)
        for hit in self.search(text, limit=limit * 4):
            if hit.session_id not in seen:
                seen.add(hit.session_id)
                out.append((self.get(hit.session_id), hit.snippet.replace("\n", " ")))
        return out[:limit]

    # -- export ------------------------------------------------------------------
    def to_markdown(self, session_id: str) -> str:
        s = self.get(session_id)
        parts = [f"# {s.title or 'Untitled session'}\n", f"- session: `{s.id}`", f"- model: `{s.model}`"]
        parts.append(f"- created: {time.strftime('%Y-%m-%d %H:%M', time.localtime(s.created))}")
        if s.system:
            parts.append("\n## System\n\n" + s.system.strip())
        for m in self.messages(s.id):
            head = "## You" if m.role == "user" else "## Assistant"
            if m.stopped:
                head += " (stopped)"
            parts.append(f"\n{head}\n\n{m.content.strip()}")
        return "\n".join(parts).rstrip() + "\n"

    def export_markdown(self, session_id: str, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        atomic_write_text(target, self.to_markdown(session_id))
        return target


__all__ = [
    "MIGRATIONS",
    "SearchHit",
    "Session",
    "SessionNotFoundError",
    "SessionStore",
    "StoredMessage",
    "applied_migrations",
    "fts_query",
    "migrate",
    "title_from",
]
