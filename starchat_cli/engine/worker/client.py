"""WorkerEngine: the Engine contract served by the model's worker process (server.py).

    engine = WorkerEngine(spec, keep_alive=300.0)   # nothing started yet
    engine.load()             # connect to the worker of spec.key(), or start it (detached)
    gen = engine.generate(turns, params)           # chunks arrive from the socket
    for text in gen: ...      # gen.stats is complete once the worker says "done"

The connection (finding or starting the worker, one request at a time) is link.py's. A worker that dies
mid-load or mid-reply by a native fault (a segfault, an abort in llama.cpp) is retried once with
the next safer settings (healing.py), the request sent again and the text already handed over not
repeated; what worked is remembered for the next call. A kill from outside, or a retry that dies
too, is one :class:`WorkerCrashedError`; the next call starts a fresh worker. This module never
imports llama.cpp.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import replace
from typing import Any, Callable, Generator, Sequence

from starchat_cli.core import defaults
from starchat_cli.core.errors import WorkerCrashedError
from starchat_cli.engine.contract import EngineInfo, Generation, Stats, TokenLogprob
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.attachment import Attachment
from starchat_cli.engine.prompting.formats import Message
from starchat_cli.engine.worker import protocol as wire
from starchat_cli.engine.worker.healing import STEPS as STEP_WORDS
from starchat_cli.engine.worker.healing import Crash, Fallbacks, next_step
from starchat_cli.engine.worker.link import Died, Link
from starchat_cli.engine.worker.spec import EngineSpec


class WorkerEngine:
    """An Engine whose model lives in a worker process kept for ``keep_alive`` seconds (-1: forever)."""

    def __init__(
        self,
        spec: EngineSpec,
        keep_alive: float = defaults.KEEP_ALIVE,
        *,
        notify: Callable[[str], None] | None = None,
        fallbacks: Fallbacks | None = None,
    ) -> None:
        """``notify``: says a crash and its retry at once (a face's stderr or log); without it the
        line joins ``info.warnings``. ``fallbacks``: where healed settings are remembered."""
        self.original = replace(spec, path=os.path.abspath(spec.path))  # the worker runs in /
        self._fallbacks = fallbacks if fallbacks is not None else Fallbacks.default()
        healed, self._applied = self._fallbacks.apply(self.original)  # what worked before here
        self._link = Link(healed, keep_alive)
        self.keep_alive = keep_alive
        self._notify = notify
        self._retried = False  # this request has had its retry
        self._unsaved = ""  # a healed request's crash, remembered once the request succeeds
        self._warnings: tuple[str, ...] = ()  # the client's own (a retry), said with the worker's
        self._notes: tuple[str, ...] = tuple(
            f"started {STEP_WORDS.get(s, s)}: remembered after an earlier crash (starchat doctor)"
            for s in self._applied
        )
        self._info = EngineInfo(
            name=spec.name, location=self.spec.path, default_system=spec.system, aliases=spec.aliases
        )

    @property
    def spec(self) -> EngineSpec:
        """The settings the worker runs with: the original, or safer ones after a crash."""
        return self._link.spec

    @property
    def pid(self) -> int:
        """The worker's process id, once connected."""
        return self._link.pid

    # -- the contract ----------------------------------------------------------------------
    @property
    def info(self) -> EngineInfo:
        return self._info

    def load(self) -> EngineInfo:
        with self._link.turn():
            self._adopt(self._healing({"op": "load"})["info"])
            self._saved()
        return self._info

    def persist(self) -> None:
        with self._link.turn():
            if self._link.connected:
                self._adopt(self._healing({"op": "persist"})["info"])

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        with self._link.turn():
            return self._healing({"op": "count_tokens", "messages": wire.messages_list(list(messages))})["n"]

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = True
    ) -> list[int] | None:
        request = {"op": "tokenize", "text": text, "add_special": add_special, "parse_special": parse_special}
        with self._link.turn():
            return self._healing(request)["tokens"]

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes] | None:
        with self._link.turn():
            pieces = self._healing({"op": "token_pieces", "tokens": list(tokens)})["pieces"]
        return None if pieces is None else [bytes.fromhex(p) for p in pieces]

    def generate(
        self,
        turns: Sequence[Message],
        params: GenerationParams | None = None,
        *,
        system: str | None = None,
        attachment: Attachment | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        request = {
            "op": "generate",
            "turns": wire.messages_list(list(turns)),
            "system": system,
            "attachment": attachment.__dict__ if attachment is not None else None,
        }
        return self._generation(request, params, cancel)

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Generation:
        wire_prompt = prompt if isinstance(prompt, str) else list(prompt)  # token ids: a JSON list
        return self._generation({"op": "complete", "prompt": wire_prompt}, params, cancel)

    def infill(
        self,
        prefix: str,
        suffix: str,
        params: GenerationParams | None = None,
        *,
        extra: Sequence[tuple[str, str]] = (),
        path: str | None = None,
        repo: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        request = {"op": "infill", "prefix": prefix, "suffix": suffix, "extra": [list(e) for e in extra]}
        return self._generation({**request, "path": path, "repo": repo}, params, cancel)

    def close(self) -> None:
        """Leave the worker; when it exits with us (keep-alive 0, no other client), wait for that."""
        self._link.leave()

    # -- generations -----------------------------------------------------------------------
    def _generation(
        self, request: dict[str, Any], params: GenerationParams | None, cancel: threading.Event | None
    ) -> Generation:
        params = params or GenerationParams()
        if params.seed is None and params.temperature > 0:  # a retry after a crash samples the same
            params = params.model_copy(update={"seed": random.getrandbits(31)})
        request = {**request, "params": params.model_dump(mode="json")}
        stats = Stats()
        token = self._link.acquire()  # held until the generation ends: one stream on the socket at a time
        try:
            first = self._healing(request, stats=stats)
        except BaseException:
            self._link.release(token)
            raise
        record: list[TokenLogprob] = []  # filled from the frames, before their text is handed out
        chunks = _Chunks(
            self._chunks(request, stats, cancel, token, record),
            lambda: self._stop(self._link.inflight, stats),
            lambda: self._link.release(token),
        )
        fit, prompt_text = wire.fit_of(first["fit"]), first.get("prompt_text", "")
        return Generation(chunks, stats, fit, prompt_text=prompt_text, logprobs=record)

    def _start_generation(self, request: dict[str, Any], stats: Stats) -> dict[str, Any]:
        rid = self._link.next_id()
        first = self._link.call({**request, "id": rid}, rid=rid)
        wire.update_stats(stats, first["stats"])
        return first

    def _chunks(
        self,
        request: dict[str, Any],
        stats: Stats,
        cancel: threading.Event | None,
        token: object,
        record: list[TokenLogprob],
    ) -> Generator[str, None, None]:
        """The reply's text. After a healed crash the request is sent again and the text the face
        already has is skipped; a retry that writes something else ends in one error."""
        try:
            yield from self._healed_chunks(request, stats, cancel, record)
        finally:
            self._link.release(token)

    def _healed_chunks(
        self,
        request: dict[str, Any],
        stats: Stats,
        cancel: threading.Event | None,
        record: list[TokenLogprob],
    ) -> Generator[str, None, None]:
        shown = ""  # handed to the face so far
        while True:
            try:
                skip = shown
                for text, logprobs in self._frames(stats, cancel, started=bool(shown)):
                    if skip:  # a retry: what the face already has is not repeated
                        if skip.startswith(text):
                            skip = skip[len(text) :]
                            continue  # its tokens' logprobs were recorded the first time
                        if not text.startswith(skip):
                            raise self._diverged()
                        text, skip = text[len(skip) :], ""
                    record.extend(logprobs)
                    if text:
                        shown += text
                        yield text
                if skip:
                    raise self._diverged()
                self._saved()
                return
            except Died as died:
                self._heal(died.crash)
                try:
                    self._start_generation(request, stats)
                except Died as again:
                    raise self._error(again.crash) from None

    def _frames(
        self, stats: Stats, cancel: threading.Event | None, *, started: bool
    ) -> Generator[tuple[str, list[TokenLogprob]], None, None]:
        rid = self._link.inflight
        watcher = _CancelWatcher(self, rid, cancel) if cancel is not None else None
        try:
            while True:
                frame = self._link.reply("replying" if started else "reading the prompt")
                logprobs = wire.logprobs_of(frame.get("logprobs") or [])
                if frame["op"] == "chunk":
                    started = True
                    stats.generated_tokens = frame.get("n", stats.generated_tokens)  # a face's progress
                    yield frame["text"], logprobs
                elif frame["op"] == "done":
                    self._link.inflight = 0
                    wire.update_stats(stats, frame["stats"])
                    self._adopt(frame["info"])
                    if logprobs:  # tokens held back at the end (a stop string's start)
                        yield "", logprobs
                    return
        except GeneratorExit:  # closed early: the worker stops, the stream is read to its end
            self._stop(rid, stats)
            raise
        except Died:
            raise
        except BaseException:
            if self._link.inflight:  # Ctrl-C mid-frame: the stream cannot be trusted, the worker sees EOF
                self._link.drop()
            raise
        finally:
            if watcher is not None:
                watcher.stop()

    def _adopt(self, info: dict[str, Any]) -> None:
        advice = (self._link.advice,) if self._link.advice else ()  # memory short when it started
        warnings = [*advice, *self._warnings, *info.get("warnings", ())]
        notes = [*self._notes, *info.get("notes", ())]
        self._info = wire.info_of({**info, "warnings": warnings, "notes": notes})

    def _stop(self, rid: int, stats: Stats) -> None:
        self._link.cancel(rid)
        self._drain(stats)

    def _drain(self, stats: Stats) -> None:
        try:
            while self._link.inflight and self._link.connected:
                frame = self._link.reply()
                if frame["op"] == "done":
                    self._link.inflight = 0
                    wire.update_stats(stats, frame["stats"])
                    self._adopt(frame["info"])
        except Exception:
            self._link.drop()  # a crash while stopping: closing never raises, the next call starts afresh

    # -- crashes -----------------------------------------------------------------------------
    def _healing(self, request: dict[str, Any], stats: Stats | None = None) -> dict[str, Any]:
        """Send ``request`` (a generation's when ``stats`` is given) and read its first reply; a
        worker that dies on it by a native fault is retried once with safer settings."""
        self._retried = False  # each request has one retry
        doing = "loading" if request["op"] == "load" else "reading the prompt"
        for attempt in range(2):
            try:
                if stats is not None:
                    return self._start_generation(request, stats)
                return self._link.call(request, doing=doing)
            except Died as died:
                if attempt:
                    raise self._error(died.crash) from None
                self._heal(died.crash)
        raise AssertionError("unreachable")

    def _heal(self, crash: Crash) -> None:
        """Switch to the next safer settings after ``crash``, or raise the one-line error."""
        step = None if self._retried else next_step(self.spec, crash, self._applied)
        if step is None:
            raise self._error(crash) from None
        self._retried, self._unsaved = True, crash.describe()
        self._link.spec, self._applied = step.spec, (*self._applied, step.name)
        line = f"the model worker crashed ({crash.describe()}): retrying {step.describe()}"
        if self._notify is not None:
            self._notify(line)
        else:
            self._warnings = (*self._warnings, line)

    def _saved(self) -> None:
        """A healed request succeeded: its model starts with these settings from now on."""
        if self._unsaved:
            self._fallbacks.remember(self.original, self._applied, self._unsaved)
            self._unsaved = ""

    def _error(self, crash: Crash) -> WorkerCrashedError:
        name, log = self.spec.name or self.spec.path, self._link.log
        if self._retried:
            self._saved()  # the next call goes on from these settings, one step further
            return WorkerCrashedError(
                f"the model worker for {name} crashed again ({crash.describe()}) after retrying "
                f"{' and '.join(STEP_WORDS[s] for s in self._applied[-1:])}: see its log {log} "
                "(`starchat doctor` lists the fallbacks tried)"
            )
        how = crash.signal and f"was killed by {crash.signal}"
        how = how or (
            f"exited ({crash.exit_code})" if crash.exit_code is not None else "stopped unexpectedly"
        )
        return WorkerCrashedError(
            f"the model worker for {name} {how} while {crash.doing}: run the command again to start "
            f"a fresh one (its log: {log})"
        )

    def _diverged(self) -> WorkerCrashedError:
        return WorkerCrashedError(
            f"the model worker for {self.spec.name or self.spec.path} crashed mid-reply and the retry "
            "wrote another reply than the text already shown: run the command again"
        )


class _Chunks:
    """The chunks of a generation: closing it before the first chunk stops the worker too (a
    generator's own ``close`` runs none of its code until it has started)."""

    def __init__(
        self, chunks: Generator[str, None, None], stop: Callable[[], None], release: Callable[[], None]
    ) -> None:
        self._chunks, self._stop, self._release, self._started = chunks, stop, release, False

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> str:
        self._started = True
        return next(self._chunks)

    def close(self) -> None:
        if not self._started:
            self._stop()
        self._chunks.close()
        self._release()  # a generation never started runs none of its own finally


class _CancelWatcher:
    """Forwards a face's cancel event (Esc, a client gone) to the worker as a ``cancel`` frame."""

    def __init__(self, engine: WorkerEngine, rid: int, cancel: threading.Event) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(engine, rid, cancel), daemon=True)
        self._thread.start()

    def _watch(self, engine: WorkerEngine, rid: int, cancel: threading.Event) -> None:
        while not self._stopped.is_set():
            if cancel.wait(0.05):
                engine._link.cancel(rid)
                return

    def stop(self) -> None:
        self._stopped.set()


__all__ = ["WorkerEngine"]
