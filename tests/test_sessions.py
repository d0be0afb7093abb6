"""The SQLite session store: migrations, messages, FTS5 search, rename/delete, export, durability."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from starchat_cli.chat.sessions import (
    MIGRATIONS,
    SessionNotFoundError,
    SessionStore,
    applied_migrations,
    fts_query,
    migrate,
)
from starchat_cli.core.paths import get_paths


def test_store_lives_in_the_data_dir_and_uses_wal(store):
    assert store.path == get_paths().sessions_db and store.path.exists()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_are_recorded_and_applied_once(tmp_path):
    db = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    names = migrate(db)
    assert names == [fn.__name__.lstrip("_") for fn in MIGRATIONS]
    assert applied_migrations(db) == names
    assert migrate(db) == []  # nothing left to do
    cols = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    assert {"stopped", "stats", "content"} <= cols


def test_a_partial_schema_is_upgraded(tmp_path):
    """A database made by an older starchat (first migration only) gains the later ones, data kept."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS[:1])
    db.execute("INSERT INTO sessions VALUES ('abcd', 't', 'demo', NULL, 1, 1)")
    db.execute(
        "INSERT INTO messages(session_id, role, content, stopped, created) VALUES ('abcd', 'user', 'old words', 0, 1)"
    )
    db.close()
    with SessionStore(path) as store:
        assert len(applied_migrations(store.db)) == len(MIGRATIONS)
        assert [h.session_id for h in store.search("words")] == ["abcd"]  # FTS rebuilt over old rows
        assert store.messages("abcd")[0].stats == {}


def test_a_failing_migration_rolls_back(tmp_path):
    db = sqlite3.connect(tmp_path / "f.db", isolation_level=None)

    def _m900_broken(conn):
        conn.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        migrate(db, [*MIGRATIONS, _m900_broken])
    assert "m900_broken" not in applied_migrations(db)
    assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone()


def test_sessions_and_messages(store):
    s = store.create("demo", system="be brief")
    store.add_message(s.id, "user", "How do I reverse a list in Python?")
    store.add_message(s.id, "assistant", "Use `reversed`", stats={"generated_tokens": 3})
    store.add_message(s.id, "user", "and a string?")
    store.add_message(s.id, "assistant", "Slice it with", stopped=True)
    got = store.get(s.id[:4])
    assert got.title == "How do I reverse a list in Python?" and got.message_count == 4
    assert got.system == "be brief" and got.model == "demo"
    msgs = store.messages(s.id)
    assert [m.role for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert [m.stopped for m in msgs] == [False, False, False, True]
    assert msgs[1].stats == {"generated_tokens": 3}


def test_list_orders_by_last_activity():
    ticks = iter(range(100))
    with SessionStore(clock=lambda: float(next(ticks))) as store:
        a = store.create("demo")
        b = store.create("demo")
        store.add_message(a.id, "user", "later")
        assert [s.id for s in store.list()] == [a.id, b.id]


def test_rename_update_delete(store):
    s = store.create("demo")
    store.add_message(s.id, "user", "hello there")
    assert store.rename(s.id, "  My chat ").title == "My chat"
    store.update(s.id, model="starchat2", system="new system")
    got = store.get(s.id)
    assert (got.model, got.system) == ("starchat2", "new system")
    store.delete(s.id)
    with pytest.raises(SessionNotFoundError):
        store.get(s.id)
    assert store.search("hello") == []  # the index forgets deleted messages


def test_unknown_and_ambiguous_ids(store):
    with pytest.raises(SessionNotFoundError, match="no session"):
        store.get("zzzz")
    with pytest.raises(SessionNotFoundError, match="ambiguous"):
        for _ in range(40):  # 40 random 8-hex ids: two share a first hex digit
            store.create("demo")
        first = [s.id[0] for s in store.list()]
        dup = next(c for c in first if first.count(c) > 1)
        store.get(dup)


def test_full_text_search(store):
    a = store.create("demo")
    store.add_message(a.id, "user", "write a quicksort in rust")
    store.add_message(a.id, "assistant", "Here is quicksort: fn quicksort(v: &mut [i32])")
    b = store.create("demo")
    store.add_message(b.id, "user", "explain python decorators")
    hits = store.search("quicksort")
    assert {h.session_id for h in hits} == {a.id} and len(hits) == 2
    assert "[quicksort]" in hits[0].snippet
    assert [h.session_id for h in store.search("decor")] == [b.id]  # prefix while typing
    assert store.search('python "AND OR') == []  # odd input is literal words, not FTS syntax
    assert [s.id for s, _ in store.search_sessions("rust")] == [a.id]


def test_fts_query_quotes_words():
    assert fts_query('a "b') == '"a" """b"*'
    assert fts_query("   ") == ""


def test_export_markdown(store, tmp_path):
    s = store.create("demo", system="sys text")
    store.add_message(s.id, "user", "q1")
    store.add_message(s.id, "assistant", "```python\nprint(1)\n```", stopped=True)
    out = store.export_markdown(s.id, tmp_path / "out" / "chat.md")
    text = out.read_text()
    assert text.startswith("# q1\n")
    assert "## System\n\nsys text" in text
    assert "## You\n\nq1" in text and "## Assistant (stopped)\n\n```python\nprint(1)\n```" in text


def test_a_saved_message_survives_kill_9(tmp_path):
    """Once add_message returns, the message is on disk: a process killed right after keeps it."""
    db = tmp_path / "crash.db"
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from starchat_cli.chat.sessions import SessionStore
        store = SessionStore({str(db)!r})
        s = store.create("demo")
        store.add_message(s.id, "user", "durable question")
        store.add_message(s.id, "assistant", "partial rep", stopped=True)
        print(s.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    sid = proc.stdout.strip()
    with SessionStore(db) as store:
        msgs = store.messages(sid)
        assert [(m.content, m.stopped) for m in msgs] == [("durable question", False), ("partial rep", True)]


def test_a_corrupt_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Exception, match="move it aside"):
        SessionStore(bad)
