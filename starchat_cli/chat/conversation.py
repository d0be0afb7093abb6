"""One conversation with a model: its session, history, system prompt and context use.

The chat faces (the TUI today) keep the screen; this class keeps the rules, and can be
driven without any UI::

    conv = Conversation(engine, model_name="demo", store=SessionStore())
    conv.add_user("hi")                                  # creates the session, saves the message
    outcome = conv.run_reply(conv.turns(), conv.system, threading.Event())   # any thread
    conv.finish_reply(session_id, outcome)               # saves the reply (stopped or not)

Every message is saved when it completes: the user's at once, the reply when it ends,
also when it was stopped or failed part-way (with whatever arrived and its stats). The
history sent to the model is normalised (alternating user/assistant, ending with a user
turn), so a crash that left two user messages in a row does not break the next reply.
Generating and loading share one engine lock: a model is never loaded while it answers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from starchat_cli.chat.sessions import Session, SessionStore, StoredMessage
from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import Engine, EngineInfo, Stats, StopReason
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import Message as Turn
from starchat_cli.engine.prompting.formats import merge_turns

EngineFactory = Callable[[str], tuple[str, Engine]]  # a model name -> (its resolved name, an engine)
OnStarted = Callable[[int, int, int], None]  # (prompt tokens, n_ctx, dropped turns)
OnChunk = Callable[[str], None]


def normalize_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Alternating user/assistant turns ending with a user turn (a crash can leave two users in a row)."""
    return merge_turns(turns, from_first_user=True)


def parse_system(arg: str) -> str | None:
    """``/system`` text: "default" (any case) is the model's own system prompt (None)."""
    return None if arg.lower() == "default" else arg


@dataclass
class ReplyOutcome:
    """How one reply ended: the text that arrived, whether it was stopped, its stats, an error."""

    text: str
    stopped: bool
    stats: Stats | None = None
    error: str | None = None

    @property
    def kept(self) -> bool:
        """Whether the reply is saved and becomes history: not an error before any text."""
        return self.error is None or bool(self.text)


def _nothing(*_: object) -> None:
    pass


class Conversation:
    """The session, history and system prompt of one chat, and the engine answering it.

    ``system`` is the system prompt given at start (``--system``; None: the model's
    default). ``/new`` returns to it; ``/clear`` keeps the current one.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        model_name: str,
        store: SessionStore,
        system: str | None = None,
        params: GenerationParams | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.store = store
        self.params = params or GenerationParams()
        self.engine_factory = engine_factory
        self.configured_system = system
        self.system: str | None = system  # None: the model's default system prompt
        self.session: Session | None = None
        self.history: list[Turn] = []
        self.engine_lock = threading.Lock()
        self.n_ctx = engine.info.n_ctx
        self.context_used = 0
        self.last_tps = 0.0
        self.last_cached = 0  # prompt tokens of the last reply reused from a cache
        self._warned: set[str] = set()  # warnings already shown (new_warnings)

    # -- the session ---------------------------------------------------------------------------
    def ensure_session(self) -> Session:
        """The session, created (with the model and system prompt) on the first message."""
        if self.session is None:
            self.session = self.store.create(self.model_name, system=self.system)
        return self.session

    def refresh_session(self) -> None:
        """Re-read the session (title, message count) after something changed it."""
        if self.session is not None:
            self.session = self.store.get(self.session.id)

    def new(self, system: str | None) -> None:
        """Forget the session and history; the next message starts a new session."""
        self.session = None
        self.history = []
        self.system = system
        self.context_used = 0

    def resume(self, session_id: str, *, keep_system: bool = False) -> list[StoredMessage]:
        """Continue a saved session (an id or a unique prefix); returns its messages.

        ``keep_system``: the system prompt given at start replaces the session's (and is
        saved). Raises StarchatError, changing nothing, when there is no such session.
        """
        session = self.store.get(session_id)
        messages = self.store.messages(session.id)
        if keep_system and self.configured_system != session.system:
            self.store.update(session.id, system=self.configured_system)
            session = self.store.get(session.id)
        self.session = session
        self.system = session.system
        self.history = [Turn(m.role, m.content) for m in messages]  # type: ignore[arg-type]
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        if last is not None and last.stats:
            self.context_used = int(last.stats.get("prompt_tokens", 0)) + int(
                last.stats.get("generated_tokens", 0)
            )
            self.n_ctx = int(last.stats.get("n_ctx", self.n_ctx) or self.n_ctx)
        return messages

    def set_system(self, system: str | None) -> None:
        """Set the system prompt (None: the model's default) for the next replies, and save it."""
        self.system = system
        if self.session is not None:
            self.store.update(self.session.id, system=system)

    def rename(self, title: str) -> Session:
        if self.session is None:
            raise StarchatError("no session yet: send a message first")
        self.session = self.store.rename(self.session.id, title)
        return self.session

    def export(self, target: Path) -> Path:
        if self.session is None:
            raise StarchatError("nothing to export yet")
        return self.store.export_markdown(self.session.id, target)

    # -- messages ------------------------------------------------------------------------------
    def add_user(self, text: str) -> Session:
        """Save the user's message (creating the session first) and add it to the history."""
        session = self.ensure_session()
        self.store.add_message(session.id, "user", text)
        self.session = self.store.get(session.id)
        self.history.append(Turn("user", text))
        return self.session

    def turns(self) -> list[Turn]:
        """The history as the model gets it: normalised, ending with the user's turn."""
        return normalize_turns(self.history)

    def finish_reply(self, session_id: str, outcome: ReplyOutcome) -> None:
        """Save a reply to the session it was asked in; it joins the history if that is still this one.

        A stopped reply is saved as stopped; a failed one is saved when some text arrived.
        The context numbers follow the reply's stats.
        """
        st = outcome.stats
        if outcome.kept:
            self.store.add_message(
                session_id,
                "assistant",
                outcome.text,
                stopped=outcome.stopped,
                stats=st.as_dict() if st is not None else None,
            )
            if self.session is not None and self.session.id == session_id:
                self.history.append(Turn("assistant", outcome.text))
        if st is not None:
            self.n_ctx = st.n_ctx or self.n_ctx
            self.context_used = st.prompt_tokens + st.generated_tokens
            self.last_tps = st.tokens_per_second
            self.last_cached = st.cached_tokens
        self.refresh_session()

    # -- the engine ----------------------------------------------------------------------------
    def run_reply(
        self,
        turns: list[Turn],
        system: str | None,
        cancel: threading.Event,
        *,
        on_started: OnStarted = _nothing,
        on_chunk: OnChunk = _nothing,
    ) -> ReplyOutcome:
        """Generate one reply (call it from a worker thread); never raises.

        ``on_started(prompt_tokens, n_ctx, dropped_turns)`` once the prompt is fitted,
        ``on_chunk(text)`` per piece of text. Setting ``cancel`` stops the reply; what
        arrived is kept. A StarchatError or any unexpected exception ends it with an
        error message (and the text so far).
        """
        parts: list[str] = []
        stats = None
        try:
            with self.engine_lock:
                gen = self.engine.generate(turns, self.params, system=system, cancel=cancel)
                stats = gen.stats
                on_started(stats.prompt_tokens, stats.n_ctx, stats.dropped_turns)
                try:
                    for chunk in gen:
                        if cancel.is_set():
                            break
                        parts.append(chunk)
                        on_chunk(chunk)
                        if cancel.is_set():
                            break
                finally:
                    gen.close()
        except StarchatError as exc:
            return ReplyOutcome("".join(parts), True, stats, exc.message)
        except Exception as exc:  # an unexpected failure is reported, never raised into the UI
            return ReplyOutcome("".join(parts), True, stats, f"{type(exc).__name__}: {exc}")
        stopped = cancel.is_set() or (stats is not None and stats.stop_reason is StopReason.CANCELLED)
        return ReplyOutcome("".join(parts), stopped, stats)

    def persist(self) -> None:
        """Write the prompt cache after a reply (from the worker thread, once the reply is shown)."""
        try:
            with self.engine_lock:
                self.engine.persist()
        except Exception:  # noqa: BLE001 - a failed cache write never breaks the chat
            pass

    def new_warnings(self) -> list[str]:
        """The engine's warnings not yet returned (an out-of-memory retry at load, a worker crash
        healed mid-reply): a face shows each once."""
        fresh = [w for w in self.engine.info.warnings if w not in self._warned]
        self._warned.update(fresh)
        return fresh

    def load(self, engine: Engine | None = None) -> EngineInfo:
        """Load an engine (this one by default) under the engine lock; raises StarchatError."""
        with self.engine_lock:
            return (engine if engine is not None else self.engine).load()

    @property
    def can_switch(self) -> bool:
        return self.engine_factory is not None

    def open_engine(self, name: str) -> tuple[str, Engine, EngineInfo]:
        """Open and load the model ``name`` (not yet used): (its resolved name, the engine, its info)."""
        if self.engine_factory is None:
            raise StarchatError("switching models is not available here")
        resolved, engine = self.engine_factory(name)
        return resolved, engine, self.load(engine)

    def engine_ready(self, engine: Engine | None, name: str, n_ctx: int) -> bool:
        """A loaded engine: switch to it if it is another one (the session's model follows).

        Returns whether the engine was switched.
        """
        switched = engine is not None and engine is not self.engine
        if switched:
            assert engine is not None
            with self.engine_lock:  # the model switched from is let go (a worker idles out)
                self.engine.close()
            self.engine = engine
            self.model_name = name
            if self.session is not None:
                self.store.update(self.session.id, model=name)
        self.n_ctx = n_ctx or self.n_ctx
        return switched


__all__ = [
    "Conversation",
    "EngineFactory",
    "ReplyOutcome",
    "normalize_turns",
    "parse_system",
]
