"""The chat TUI driven through Textual's pilot, with a fast fake engine (no model, no network)."""

from __future__ import annotations

import pytest

from starchat_cli.chat.conversation import normalize_turns
from starchat_cli.chat.sessions import SessionStore
from starchat_cli.core.errors import StarchatError
from starchat_cli.edits.undo import UndoJournal
from starchat_cli.engine.prompting.formats import Message
from starchat_cli.tui.app import ChatApp, make_app
from starchat_cli.tui.screens import ConfirmScreen, DiffScreen, InsertScreen, SessionsScreen
from starchat_cli.tui.widgets import AssistantMessage, ChatInput, CodeActions, Note, UserMessage
from tests.helpers.fake_engine import FakeEngine, split_chunks
from tests.helpers.tui import say, settle

pytestmark = pytest.mark.anyio

SIZE = (100, 32)
CODE_REPLY = "Here you go:\n\n```python\n# file: app.py\nprint('hello')\n```\n\nRun it with python."


def build(engine: FakeEngine, **kwargs) -> ChatApp:
    app = make_app(engine, model_name="fake", store=SessionStore(), **kwargs)
    app.notes = []  # type: ignore[attr-defined]
    original = app.notify

    def notify(message, **kw):
        app.notes.append(str(message))  # type: ignore[attr-defined]
        return original(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    return app


async def submit_and_confirm(pilot, answer: str) -> None:
    """Submit the insert form, then answer the diff's confirm with ``answer`` (y or n)."""
    await pilot.press("enter")
    await pilot.pause()
    await pilot.press(answer)
    await pilot.pause()


async def until_held(pilot, engine: FakeEngine) -> None:
    """Let the UI run until the fake engine holds mid-reply (``hold_after``)."""
    for _ in range(500):
        if engine.held.is_set():
            break
        await pilot.pause()


def saved(app: ChatApp) -> list:
    """The messages stored for the session on screen."""
    conv = app.conversation
    return conv.store.messages(conv.session.id)


def status(app: ChatApp) -> str:
    return str(app.query_one("#status").render())


async def test_a_reply_streams_in_and_both_messages_are_saved():
    engine = FakeEngine("Hello **there**, a *short* reply.")
    app = build(engine)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "hi model")
        replies = app.query(AssistantMessage)
        assert [r.text for r in replies] == ["Hello **there**, a *short* reply."]
        assert [u.render().plain for u in app.query(UserMessage)] == ["hi model"]  # type: ignore[union-attr]
        msgs = saved(app)
        assert [(m.role, m.content, m.stopped) for m in msgs] == [
            ("user", "hi model", False),
            ("assistant", "Hello **there**, a *short* reply.", False),
        ]
        assert msgs[1].stats["generated_tokens"] == len(split_chunks(engine.reply))
        s = status(app)
        assert "fake" in s and "ctx " in s and "/2,048" in s and "1000.0 tok/s" in s
        assert engine.calls[-1][0] == [Message("user", "hi model")]


async def test_the_second_turn_sends_the_whole_conversation():
    engine = FakeEngine(lambda turns: f"reply {len(turns)}")
    app = build(engine, system="be terse")
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "one")
        await say(pilot, "two")
        turns, system = engine.calls[-1]
        assert [(t.role, t.content) for t in turns] == [
            ("user", "one"),
            ("assistant", "reply 1"),
            ("user", "two"),
        ]
        assert system == "be terse"
        assert app.conversation.store.get(app.conversation.session.id).system == "be terse"


async def test_esc_stops_and_keeps_the_partial_reply_marked_stopped():
    engine = FakeEngine("one two three four five six", hold_after=3)
    app = build(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.chat.input.text = "count"
        await pilot.press("enter")
        await until_held(pilot, engine)
        assert engine.held.is_set() and app.chat.generating
        # The UI stays usable mid-stream: typing goes into the input.
        await pilot.press("o", "k")
        assert app.chat.input.text == "ok"
        await pilot.press("escape")
        engine.release.set()
        await settle(pilot)
        reply = app.query_one(AssistantMessage)
        assert reply.text == "one two three " and reply.stopped and reply.has_class("-stopped")
        last = saved(app)[-1]
        assert (last.content, last.stopped) == ("one two three ", True)
        assert "stopped" in status(app)
        assert not app.chat.generating


async def test_a_session_is_resumed_with_its_history():
    store = SessionStore()
    s = store.create("fake", system="sys")
    store.add_message(s.id, "user", "first question")
    store.add_message(
        s.id, "assistant", "first answer", stats={"prompt_tokens": 10, "generated_tokens": 5, "n_ctx": 2048}
    )
    store.add_message(s.id, "user", "second question")
    store.add_message(s.id, "assistant", "cut", stopped=True)
    store.close()
    engine = FakeEngine("third answer")
    app = build(engine, session_id=s.id[:5])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert [w.text for w in app.query(AssistantMessage)] == ["first answer", "cut"]
        assert app.query(AssistantMessage)[1].has_class("-stopped")
        await say(pilot, "third question")
        turns, system = engine.calls[-1]
        assert [t.content for t in turns] == [
            "first question",
            "first answer",
            "second question",
            "cut",
            "third question",
        ]
        assert system == "sys"
        assert app.conversation.store.get(s.id).message_count == 6


def test_normalize_turns_merges_a_user_turn_left_without_reply():
    turns = [Message("assistant", "x"), Message("user", "a"), Message("user", "b")]
    assert normalize_turns(turns) == [Message("user", "a\n\nb")]


async def test_context_overflow_is_shown():
    store = SessionStore()
    s = store.create("fake")
    for i in range(6):
        store.add_message(s.id, "user", f"question {i} " + "x" * 200)
        store.add_message(s.id, "assistant", f"answer {i} " + "y" * 200)
    engine = FakeEngine("ok", n_ctx=600, reserve=100)
    app = build(engine, session_id=s.id)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "latest question")
        notes = [n.render().plain for n in app.query(Note)]  # type: ignore[union-attr]
        warning = [n for n in notes if "outgrew" in n]
        assert warning and "600-token context" in warning[0]
        dropped = app.conversation.store.messages(s.id)[-1].stats["dropped_turns"]
        assert dropped > 0 and f"the {dropped} oldest turn" in warning[0]
        assert any("dropped" in n for n in app.notes)


async def test_sessions_screen_searches_and_opens(work):
    store = SessionStore()
    a = store.create("fake")
    store.add_message(a.id, "user", "how to parse json in rust")
    store.add_message(a.id, "assistant", "use serde_json")
    b = store.create("fake")
    store.add_message(b.id, "user", "python decorators please")
    store.close()
    app = build(FakeEngine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        olist = screen.query_one("#session-list")
        assert olist.option_count == 2
        await pilot.press(*"serde")
        await pilot.pause()
        assert olist.option_count == 1 and olist.get_option_at_index(0).id == a.id
        assert "use [serde]_json" in str(olist.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert app.conversation.session is not None and app.conversation.session.id == a.id
        assert [w.text for w in app.query(AssistantMessage)] == ["use serde_json"]


async def test_sessions_screen_renames_and_deletes():
    store = SessionStore()
    a = store.create("fake")
    store.add_message(a.id, "user", "old title")
    store.close()
    app = build(FakeEngine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("down")  # into the list
        await pilot.press("ctrl+r")
        await pilot.pause()
        app.screen.query_one("#prompt-input").value = "Renamed chat"
        await pilot.press("enter")
        await pilot.pause()
        assert app.conversation.store.get(a.id).title == "Renamed chat"
        await pilot.press("delete")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert app.conversation.store.list() == []


async def open_insert(pilot, command: str = "") -> InsertScreen:
    if command:
        pilot.app.chat.input.text = command
        pilot.app.chat.input.focus()
        await pilot.press("enter")
    else:
        await pilot.press("ctrl+s")
    await pilot.pause()
    assert isinstance(pilot.app.screen, InsertScreen)
    return pilot.app.screen


async def append_the_code_block(pilot) -> None:
    """Ask for code, then append the reply's block to its file (app.py) from the save form."""
    await say(pilot, "write hello")
    screen = await open_insert(pilot)
    screen.query_one("#insert-mode").value = "append"
    await pilot.press("enter")
    await pilot.pause()


async def test_save_a_code_block_with_diff_confirm_and_undo(work):
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "write hello")
        actions = app.query(CodeActions)
        assert len(actions) == 1 and actions[0].suggested == "app.py"
        screen = await open_insert(pilot)
        assert screen.query_one("#insert-path").value == "app.py"  # the reply's suggestion, not yet written
        assert not (work / "app.py").exists()
        await pilot.press("enter")  # preview the diff
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen)
        diff = app.screen.plan.diff()
        assert "+++ b/app.py" in diff and "+print('hello')" in diff
        assert not (work / "app.py").exists()  # still nothing written
        await pilot.press("y")
        await pilot.pause()
        assert (work / "app.py").read_text() == "# file: app.py\nprint('hello')\n"
        assert any("wrote app.py" in n for n in app.notes)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert not (work / "app.py").exists()
        assert any("undone" in n for n in app.notes)


async def test_cancelling_the_diff_writes_nothing(work):
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "write hello")
        await open_insert(pilot)
        await submit_and_confirm(pilot, "n")
        assert not (work / "app.py").exists() and "nothing written" in app.notes


async def test_insert_after_an_anchor_in_an_existing_file(work):
    target = work / "main.py"
    target.write_bytes(b"import os\r\n\r\ndef main():\r\n    pass\r\n")
    reply = "Add this:\n\n```python\nimport sys\n```\n"
    app = build(FakeEngine(reply), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "add an import")
        screen = await open_insert(pilot, "/insert 1")
        screen.query_one("#insert-path").value = "main.py"
        screen.query_one("#insert-mode").value = "after"
        await pilot.pause()
        where = screen.query_one("#insert-where")
        assert where.display and "after" in where.placeholder
        where.value = "import os"
        await pilot.click("#insert-preview-diff")
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen)
        assert " import os\n+import sys\n" in app.screen.plan.diff()
        await pilot.press("y")
        await pilot.pause()
        assert target.read_bytes() == b"import os\r\nimport sys\r\n\r\ndef main():\r\n    pass\r\n"


async def test_a_file_changed_after_the_diff_is_refused(work):
    target = work / "app.py"
    target.write_text("original\n")
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await append_the_code_block(pilot)
        assert isinstance(app.screen, DiffScreen)
        target.write_text("edited meanwhile\n")
        await pilot.press("y")
        await pilot.pause()
        assert target.read_text() == "edited meanwhile\n"
        assert any("changed on disk" in n for n in app.notes)
        assert UndoJournal().entries() == []


async def test_binary_file_is_refused(work):
    (work / "app.py").write_bytes(b"\x00\x01binary")
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await append_the_code_block(pilot)
        assert not isinstance(app.screen, DiffScreen)
        assert any("binary" in n for n in app.notes)


@pytest.mark.parametrize("answer", ["n", "y"])
async def test_paths_outside_the_working_directory_need_a_second_yes(work, answer):
    outside = work.parent / "outside.py"
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "write hello")
        screen = await open_insert(pilot, "/save")
        screen.query_one("#insert-path").value = "../outside.py"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "outside the working directory" in app.screen.question
        await pilot.press(answer)
        await pilot.pause()
        if answer == "n":
            assert not isinstance(app.screen, DiffScreen) and not outside.exists()
        else:
            assert isinstance(app.screen, DiffScreen)
            await pilot.press("y")
            await pilot.pause()
            assert outside.read_text().endswith("print('hello')\n")


async def test_undo_after_a_restart(work):
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "write hello")
        await open_insert(pilot)
        await submit_and_confirm(pilot, "y")
    assert (work / "app.py").exists()
    app2 = build(FakeEngine(), root=work)
    async with app2.run_test(size=SIZE) as pilot:
        app2.chat.input.text = "/undo"
        await pilot.press("enter")
        await pilot.pause()
    assert not (work / "app.py").exists()


async def test_copy_code_block(monkeypatch):
    copied: list[str] = []
    monkeypatch.setattr("starchat_cli.tui.codeflow.system_copy", lambda text: False)
    app = build(FakeEngine(CODE_REPLY))
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "write hello")
        await pilot.click("#copy-1")
        await pilot.pause()
        assert copied == ["# file: app.py\nprint('hello')\n"]
        assert any("OSC 52" in n for n in app.notes)


async def test_input_newline_key_and_history():
    app = build(FakeEngine("ok"))
    async with app.run_test(size=SIZE) as pilot:
        inp = app.query_one(ChatInput)
        await pilot.press("a", "ctrl+j", "b")
        assert inp.text == "a\nb"
        await pilot.press("enter")
        await settle(pilot)
        assert saved(app)[0].content == "a\nb"
        await say(pilot, "second")
        assert inp.text == ""
        await pilot.press("up")
        assert inp.text == "second"
        await pilot.press("up")
        assert inp.text == "a\nb"
        await pilot.press("down", "down")
        assert inp.text == ""


async def test_commands(work):
    app = build(FakeEngine("reply"), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "/system you are a pirate")
        assert app.conversation.system == "you are a pirate"
        await say(pilot, "ahoy")
        first = app.conversation.session.id
        assert app.conversation.store.get(first).system == "you are a pirate"
        await say(pilot, "/rename Pirate talk")
        assert app.conversation.store.get(first).title == "Pirate talk"
        await say(pilot, "/export out/chat.md")
        assert (work / "out" / "chat.md").read_text().startswith("# Pirate talk\n")
        await say(pilot, "/clear")
        assert (
            app.conversation.session is None
            and app.conversation.system == "you are a pirate"
            and not app.query(AssistantMessage)
        )
        await say(pilot, "/new")
        assert app.conversation.system is None
        await say(pilot, "/bogus")
        assert any("unknown command /bogus" in n for n in app.notes)
        await say(pilot, "/help")
        assert app.screen.__class__.__name__ == "HelpScreen"


async def test_model_switch_through_the_factory():
    made: list[str] = []

    def factory(name: str):
        if name == "missing":
            raise StarchatError("unknown model 'missing'")
        made.append(name)
        return name, FakeEngine(f"from {name}")

    first = FakeEngine("from first")
    app = build(first, engine_factory=factory)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "/model other")
        await settle(pilot)
        assert made == ["other"] and app.conversation.model_name == "other"
        assert first.closed and not app.conversation.engine.closed  # the old model is let go
        await say(pilot, "hi")
        assert app.query(AssistantMessage)[-1].text == "from other"
        assert app.conversation.store.get(app.conversation.session.id).model == "other"
        await say(pilot, "/model missing")
        await settle(pilot)
        assert app.conversation.model_name == "other" and any("unknown model" in n for n in app.notes)


async def test_an_engine_error_is_shown_not_raised():
    class Broken(FakeEngine):
        def generate(self, turns, params=None, *, system=None, **_):
            raise StarchatError("the question does not fit")

    app = build(Broken())
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "hello")
        notes = [n.render().plain for n in app.query(Note)]  # type: ignore[union-attr]
        assert any("does not fit" in n for n in notes)
        assert not app.chat.generating
        # the user's message is kept; a retry merges into one user turn
        await say(pilot, "again")
        assert [m.role for m in saved(app)] == ["user", "user"]


async def test_command_palette_has_chat_commands():
    app = build(FakeEngine())
    async with app.run_test(size=SIZE) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"New session", "Sessions", "Undo last file write", "Stop reply"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"


def test_bindings_have_ids():
    ids = {b.id for b in ChatApp.BINDINGS}  # type: ignore[union-attr]
    assert {"chat.stop", "chat.new", "chat.sessions", "chat.undo", "chat.help"} <= ids


async def test_a_long_reply_streams_into_bounded_markdown_segments():
    paragraphs = [f"Paragraph {i} " + "word " * 20 for i in range(40)]
    text = (
        "\n\n".join(paragraphs[:20]) + "\n\n```python\nx = 1\n\ny = 2\n```\n\n" + "\n\n".join(paragraphs[20:])
    )
    app = build(FakeEngine(text, chunks=[text[i : i + 7] for i in range(0, len(text), 7)]))
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "long please")
        reply = app.query_one(AssistantMessage)
        segments = list(reply.query(".reply-body"))
        assert len(segments) >= 2
        assert "".join(md.source for md in segments) == text == reply.text
        # no segment boundary falls inside the code fence
        assert all(md.source.count("```") % 2 == 0 for md in segments)


async def test_switching_sessions_mid_reply_saves_the_partial_reply_where_it_belongs():
    store = SessionStore()
    other = store.create("fake")
    store.add_message(other.id, "user", "an older chat")
    store.add_message(other.id, "assistant", "older answer")
    store.close()
    engine = FakeEngine("alpha beta gamma delta epsilon", hold_after=2)
    app = build(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.chat.input.text = "new question"
        await pilot.press("enter")
        await until_held(pilot, engine)
        first = app.conversation.session.id
        await pilot.press("ctrl+o")  # choose the older chat in the sessions screen
        await pilot.pause()
        await pilot.press(*"older", "enter")
        await pilot.pause()
        await pilot.pause()
        engine.release.set()
        await settle(pilot)
        assert app.conversation.session.id == other.id
        assert [w.text for w in app.query(AssistantMessage)] == ["older answer"]
        kept = app.conversation.store.messages(first)
        assert [(m.role, m.stopped) for m in kept] == [("user", False), ("assistant", True)]
        assert kept[1].content.startswith("alpha beta")
        assert [t.content for t in app.conversation.history] == ["an older chat", "older answer"]


async def test_a_read_only_file_is_refused_with_a_message(work):
    target = work / "app.py"
    target.write_text("original\n")
    target.chmod(0o444)
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await append_the_code_block(pilot)
        assert not isinstance(app.screen, DiffScreen)  # refused before the diff is offered
        assert any("read-only" in n and "chmod" in n for n in app.notes), app.notes
    assert target.read_text() == "original\n" and target.stat().st_mode & 0o777 == 0o444


async def test_a_file_made_read_only_after_the_diff_is_refused(work):
    target = work / "app.py"
    target.write_text("original\n")
    app = build(FakeEngine(CODE_REPLY), root=work)
    async with app.run_test(size=SIZE) as pilot:
        await append_the_code_block(pilot)
        assert isinstance(app.screen, DiffScreen)
        target.chmod(0o444)
        await pilot.press("y")
        await pilot.pause()
        assert any("read-only" in n for n in app.notes), app.notes
    assert target.read_text() == "original\n"
    assert UndoJournal().entries() == []
