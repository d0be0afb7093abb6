"""The conversation rules without any UI: the fake engine and a real SQLite file."""

from __future__ import annotations

import threading

import pytest

from starchat_cli.chat.conversation import Conversation, ReplyOutcome, normalize_turns, parse_system
from starchat_cli.chat.sessions import SessionStore
from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.prompting.formats import Message
from tests.helpers.fake_engine import FakeEngine, FakeGeneration, split_chunks


def conversation(store: SessionStore, engine: FakeEngine | None = None, **kwargs) -> Conversation:
    return Conversation(engine or FakeEngine(), model_name="fake", store=store, **kwargs)


def reply(conv: Conversation, text: str, cancel: threading.Event | None = None, **callbacks) -> ReplyOutcome:
    """What the app does for one message: save it, generate, save the reply."""
    session = conv.add_user(text)
    outcome = conv.run_reply(conv.turns(), conv.system, cancel or threading.Event(), **callbacks)
    conv.finish_reply(session.id, outcome)
    return outcome


def test_messages_are_saved_in_order_with_stats(store):
    engine = FakeEngine(lambda turns: f"answer {len(turns)}")
    conv = conversation(store, engine, system="be brief")
    assert conv.session is None  # created on the first message, not before
    chunks: list[str] = []
    first = reply(conv, "one", on_chunk=chunks.append)
    assert (first.text, first.stopped, first.error) == ("answer 1", False, None)
    assert chunks == split_chunks("answer 1")
    reply(conv, "two")
    session = store.get(conv.session.id)
    assert (session.model, session.system, session.message_count) == ("fake", "be brief", 4)
    msgs = store.messages(session.id)
    assert [(m.role, m.content, m.stopped) for m in msgs] == [
        ("user", "one", False),
        ("assistant", "answer 1", False),
        ("user", "two", False),
        ("assistant", "answer 3", False),
    ]
    assert msgs[0].stats == {}
    assert msgs[3].stats["generated_tokens"] == 2 and msgs[3].stats["stop_reason"] == "stop"
    assert msgs[3].stats["n_ctx"] == 2048
    # the second reply saw the whole conversation, and the system prompt
    assert engine.calls[-1] == (
        [Message("user", "one"), Message("assistant", "answer 1"), Message("user", "two")],
        "be brief",
    )
    assert conv.history == [*engine.calls[-1][0], Message("assistant", "answer 3")]
    assert conv.context_used == msgs[3].stats["prompt_tokens"] + 2
    assert conv.last_tps == pytest.approx(1000.0)


def test_a_stopped_reply_is_saved_as_stopped_with_what_arrived(store):
    conv = conversation(store, FakeEngine("one two three four five"))
    cancel = threading.Event()
    seen: list[str] = []

    def chunk(text: str) -> None:
        seen.append(text)
        if len(seen) == 2:
            cancel.set()  # Esc after the second chunk

    outcome = reply(conv, "count", cancel, on_chunk=chunk)
    assert (outcome.text, outcome.stopped, outcome.error) == ("one two ", True, None)
    saved = store.messages(conv.session.id)[-1]
    assert (saved.role, saved.content, saved.stopped) == ("assistant", "one two ", True)
    assert saved.stats["stop_reason"] == "cancelled" and saved.stats["generated_tokens"] == 2
    assert conv.history[-1] == Message("assistant", "one two ")


def test_stopping_from_another_thread_while_the_engine_holds(store):
    engine = FakeEngine("alpha beta gamma delta", hold_after=2)
    conv = conversation(store, engine)
    session = conv.add_user("go")
    cancel = threading.Event()
    result: list[ReplyOutcome] = []
    worker = threading.Thread(target=lambda: result.append(conv.run_reply(conv.turns(), None, cancel)))
    worker.start()
    assert engine.held.wait(5)
    assert conv.engine_lock.locked()  # one engine lock: nothing loads while it generates
    cancel.set()
    engine.release.set()
    worker.join(5)
    assert not conv.engine_lock.locked()
    (outcome,) = result
    assert outcome.stopped and outcome.text.startswith("alpha beta")
    conv.finish_reply(session.id, outcome)
    assert store.messages(session.id)[-1].stopped


def test_resume_restores_history_system_and_context_use(store):
    s = store.create("fake", system="you are a pirate")
    store.add_message(s.id, "user", "ahoy")
    store.add_message(
        s.id, "assistant", "arr", stats={"prompt_tokens": 30, "generated_tokens": 7, "n_ctx": 4096}
    )
    conv = conversation(store)
    messages = conv.resume(s.id[:6])  # a unique prefix is enough
    assert [m.content for m in messages] == ["ahoy", "arr"]
    assert conv.session is not None and conv.session.id == s.id
    assert conv.system == "you are a pirate"
    assert conv.history == [Message("user", "ahoy"), Message("assistant", "arr")]
    assert (conv.context_used, conv.n_ctx) == (37, 4096)
    reply(conv, "where is the treasure?")
    assert conv.session.id == s.id and store.get(s.id).message_count == 4
    turns, system = conv.engine.calls[-1]  # type: ignore[attr-defined]
    assert [t.content for t in turns] == ["ahoy", "arr", "where is the treasure?"]
    assert system == "you are a pirate"


def test_resume_of_an_unknown_session_changes_nothing(store):
    conv = conversation(store, system="mine")
    reply(conv, "hello")
    before = (conv.session, list(conv.history), conv.system)
    with pytest.raises(StarchatError):
        conv.resume("nope")
    assert (conv.session, conv.history, conv.system) == before


def test_keep_system_replaces_the_sessions_system_prompt(store):
    s = store.create("fake", system="old prompt")
    store.add_message(s.id, "user", "q")
    kept = conversation(store, system="from the command line")
    kept.resume(s.id, keep_system=True)
    assert kept.system == "from the command line"
    assert store.get(s.id).system == "from the command line"

    t = store.create("fake", system="their prompt")
    other = conversation(store, system="from the command line")
    other.resume(t.id)  # without keep_system the session's own prompt wins
    assert other.system == "their prompt" and store.get(t.id).system == "their prompt"


def test_system_prompt_default_and_new_sessions(store):
    conv = conversation(store, system="start prompt")
    reply(conv, "hi")
    conv.set_system(parse_system("be terse"))
    assert store.get(conv.session.id).system == "be terse"
    conv.set_system(parse_system("Default"))
    assert conv.system is None and store.get(conv.session.id).system is None
    first = conv.session.id
    conv.new(conv.configured_system)  # /new: back to the prompt given at start
    assert (conv.session, conv.history, conv.system, conv.context_used) == (None, [], "start prompt", 0)
    reply(conv, "again")
    assert conv.session.id != first and store.get(conv.session.id).system == "start prompt"


def test_model_switch_updates_the_session(store):
    opened: list[str] = []

    def factory(name: str):
        if name == "missing":
            raise StarchatError("unknown model 'missing'")
        opened.append(name)
        return f"{name}-q4", FakeEngine(f"from {name}", n_ctx=8192, name=name)

    conv = conversation(store, FakeEngine("from first"), engine_factory=factory)
    reply(conv, "hi")
    first_engine = conv.engine
    assert not conv.engine_ready(first_engine, "fake", 0)  # a preload of the same engine: no switch
    with pytest.raises(StarchatError, match="unknown model"):
        conv.open_engine("missing")
    name, engine, info = conv.open_engine("other")
    assert (name, opened, info.n_ctx, engine.loads) == ("other-q4", ["other"], 8192, 1)
    assert conv.engine is first_engine  # not switched until it is ready
    assert conv.engine_ready(engine, name, info.n_ctx)
    assert (conv.engine, conv.model_name, conv.n_ctx) == (engine, "other-q4", 8192)
    assert store.get(conv.session.id).model == "other-q4"
    assert reply(conv, "and now?").text == "from other"
    assert [m.content for m in store.messages(conv.session.id)][-1] == "from other"


def test_switching_needs_a_factory(store):
    conv = conversation(store)
    assert not conv.can_switch
    with pytest.raises(StarchatError):
        conv.open_engine("other")


def test_history_is_normalised_after_a_crash_left_two_user_turns(store):
    s = store.create("fake")
    store.add_message(s.id, "user", "first try")  # the reply never got saved (kill -9)
    store.add_message(s.id, "user", "second try")
    conv = conversation(store)
    conv.resume(s.id)
    assert conv.turns() == [Message("user", "first try\n\nsecond try")]
    reply(conv, "third")
    assert conv.engine.calls[-1][0] == [  # type: ignore[attr-defined]
        Message("user", "first try\n\nsecond try\n\nthird")
    ]
    # an assistant turn at the start cannot open a prompt
    assert normalize_turns([Message("assistant", "x"), Message("user", "a")]) == [Message("user", "a")]


def test_dropped_turns_are_reported(store):
    s = store.create("fake")
    for i in range(6):
        store.add_message(s.id, "user", f"question {i} " + "x" * 200)
        store.add_message(s.id, "assistant", f"answer {i} " + "y" * 200)
    conv = conversation(store, FakeEngine("ok", n_ctx=600, reserve=100))
    conv.resume(s.id)
    started: list[tuple[int, int, int]] = []
    outcome = reply(conv, "latest", on_started=lambda *args: started.append(args))
    ((prompt_tokens, n_ctx, dropped),) = started
    assert n_ctx == 600 and dropped > 0 and 0 < prompt_tokens <= 500
    assert outcome.stats is not None and outcome.stats.dropped_turns == dropped
    assert store.messages(s.id)[-1].stats["dropped_turns"] == dropped
    # the history keeps every turn: only the prompt left the oldest out
    assert len(conv.history) == 14


class Failing(FakeEngine):
    def __init__(self, exc: Exception, after: int | None = None) -> None:
        super().__init__("part of a reply")
        self.exc, self.after = exc, after

    def generate(self, turns, params=None, *, system=None, **kw):
        if self.after is None:
            self.calls.append((list(turns), system))
            raise self.exc
        gen = super().generate(turns, params, system=system, **kw)
        exc, after = self.exc, self.after

        def chunks():
            for _ in range(after):
                yield next(gen)
            raise exc

        return FakeGeneration(chunks(), gen.stats)


def test_an_engine_error_before_any_text_saves_no_reply(store):
    conv = conversation(store, Failing(StarchatError("the question does not fit")))
    outcome = reply(conv, "hello")
    assert (outcome.text, outcome.stopped, outcome.error) == ("", True, "the question does not fit")
    assert [m.role for m in store.messages(conv.session.id)] == ["user"]
    assert conv.history == [Message("user", "hello")]
    reply(conv, "again")  # the retry merges into one user turn
    assert conv.engine.calls[-1][0] == [Message("user", "hello\n\nagain")]  # type: ignore[attr-defined]


def test_an_unexpected_failure_mid_reply_keeps_the_partial_text(store):
    conv = conversation(store, Failing(RuntimeError("boom"), after=2))
    outcome = reply(conv, "hello")
    assert (outcome.text, outcome.stopped, outcome.error) == ("part of ", True, "RuntimeError: boom")
    saved = store.messages(conv.session.id)[-1]
    assert (saved.role, saved.content, saved.stopped) == ("assistant", "part of ", True)
    assert saved.stats["generated_tokens"] == 2
    assert not conv.engine_lock.locked()


def test_a_reply_finished_after_leaving_its_session_is_saved_there_only(store):
    conv = conversation(store, FakeEngine("late answer"))
    asked = conv.add_user("question")
    outcome = conv.run_reply(conv.turns(), None, threading.Event())
    other = store.create("fake")
    store.add_message(other.id, "user", "elsewhere")
    conv.resume(other.id)
    conv.finish_reply(asked.id, outcome)
    assert [m.content for m in store.messages(asked.id)] == ["question", "late answer"]
    assert conv.history == [Message("user", "elsewhere")]
