"""WorkerEngine: the Engine contract served by the model's worker process (server.py).

    engine = WorkerEngine(spec, keep_alive=300.0)   # nothing started yet
    engine.load()             # connect to the worker of spec.key(), or start it (detached)
    gen = engine.generate(turns, params)           # chunks arrive from the socket
    for text in gen: ...      # gen.stats is complete once the worker says "done"

Two shells starting the same worker at once share one (a flock per key). A worker that dies
mid-load or mid-reply by a native fault (a segfault, an abort in llama.cpp) is retried once with
the next safer settings (healing.py), the request sent again and the text already handed over not
repeated; what worked is remembered for the next call. A kill from outside, or a retry that dies
too, is one :class:`WorkerCrashedError`; the next call starts a fresh worker. This module never
imports llama.cpp.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import random
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Sequence

from starchat_cli import __version__
from starchat_cli.core import defaults
from starchat_cli.core.errors import WorkerCrashedError
from starchat_cli.engine.contract import EngineInfo, Generation, Stats, TokenLogprob
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.attachment import Attachment
from starchat_cli.engine.prompting.formats import Message
from starchat_cli.engine.worker import ahead, registry
from starchat_cli.engine.worker import protocol as wire
from starchat_cli.engine.worker.healing import STEPS as STEP_WORDS
from starchat_cli.engine.worker.healing import Crash, Fallbacks, next_step, read_crash
from starchat_cli.engine.worker.spec import PROTOCOL, EngineSpec

START_TIMEOUT = 60.0  # seconds for a new worker to listen (it loads the model after that)


class _Died(Exception):
    """The worker went away mid-request: healed (a retry) or said (WorkerCrashedError) above."""

    def __init__(self, crash: Crash) -> None:
        super().__init__(crash.describe())
        self.crash = crash


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
        self.spec, self._applied = self._fallbacks.apply(self.original)  # what worked before here
        self.keep_alive = keep_alive
        self._notify = notify
        self._retried = False  # this request has had its retry
        self._unsaved = ""  # a healed request's crash, remembered once the request succeeds
        self.pid = 0  # the worker's, once connected
        self._sock: Any = None
        self._proc: subprocess.Popen[bytes] | None = None  # the worker, when this process started it
        self._key = ""
        self._ids = itertools.count(1)
        self._inflight = 0  # the id of the generation being streamed
        self._sending = threading.Lock()  # a cancel frame from a watcher thread never splits a request
        self._busy = threading.Lock()  # one request on the socket at a time (serve's threads queue here)
        self._owner: int | None = None  # the thread holding _busy
        self._holder: object | None = None  # the request holding it (a generation: until it ends)
        self._warnings: tuple[str, ...] = ()  # the client's own (memory, a retry), said with the worker's
        self._notes: tuple[str, ...] = tuple(
            f"started {STEP_WORDS.get(s, s)}: remembered after an earlier crash (starchat doctor)"
            for s in self._applied
        )
        self._info = EngineInfo(
            name=spec.name, location=self.spec.path, default_system=spec.system, aliases=spec.aliases
        )

    # -- the contract ----------------------------------------------------------------------
    @property
    def info(self) -> EngineInfo:
        return self._info

    def load(self) -> EngineInfo:
        with self._turn():
            self._adopt(self._healing({"op": "load"})["info"])
            self._saved()
        return self._info

    def persist(self) -> None:
        with self._turn():
            if self._sock is not None:
                self._adopt(self._healing({"op": "persist"})["info"])

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        with self._turn():
            return self._healing({"op": "count_tokens", "messages": wire.messages_list(list(messages))})["n"]

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = True
    ) -> list[int] | None:
        request = {"op": "tokenize", "text": text, "add_special": add_special, "parse_special": parse_special}
        with self._turn():
            return self._healing(request)["tokens"]

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes] | None:
        with self._turn():
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
        if self._sock is None:
            return
        exiting = False
        if not self._inflight:
            try:
                exiting = bool(self._call({"op": "leave"}).get("exiting"))
            except Exception:
                pass  # gone already
        self._drop()
        deadline = time.monotonic() + 2.0
        while exiting and registry.alive(self.pid) and time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break  # ours: reaped
            time.sleep(0.002)

    # -- generations -----------------------------------------------------------------------
    def _generation(
        self, request: dict[str, Any], params: GenerationParams | None, cancel: threading.Event | None
    ) -> Generation:
        params = params or GenerationParams()
        if params.seed is None and params.temperature > 0:  # a retry after a crash samples the same
            params = params.model_copy(update={"seed": random.getrandbits(31)})
        request = {**request, "params": params.model_dump(mode="json")}
        stats = Stats()
        token = self._acquire()  # held until the generation ends: one stream on the socket at a time
        try:
            first = self._healing(request, stats=stats)
        except BaseException:
            self._release(token)
            raise
        record: list[TokenLogprob] = []  # filled from the frames, before their text is handed out
        chunks = _Chunks(
            self._chunks(request, stats, cancel, token, record),
            lambda: self._stop(self._inflight, stats),
            lambda: self._release(token),
        )
        fit, prompt_text = wire.fit_of(first["fit"]), first.get("prompt_text", "")
        return Generation(chunks, stats, fit, prompt_text=prompt_text, logprobs=record)

    def _start_generation(self, request: dict[str, Any], stats: Stats) -> dict[str, Any]:
        rid = next(self._ids)
        first = self._call({**request, "id": rid}, rid=rid)
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
            self._release(token)

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
            except _Died as died:
                self._heal(died.crash)
                try:
                    self._start_generation(request, stats)
                except _Died as again:
                    raise self._error(again.crash) from None

    def _frames(
        self, stats: Stats, cancel: threading.Event | None, *, started: bool
    ) -> Generator[tuple[str, list[TokenLogprob]], None, None]:
        rid = self._inflight
        watcher = _CancelWatcher(self, rid, cancel) if cancel is not None else None
        try:
            while True:
                frame = self._reply("replying" if started else "reading the prompt")
                logprobs = wire.logprobs_of(frame.get("logprobs") or [])
                if frame["op"] == "chunk":
                    started = True
                    stats.generated_tokens = frame.get("n", stats.generated_tokens)  # a face's progress
                    yield frame["text"], logprobs
                elif frame["op"] == "done":
                    self._inflight = 0
                    wire.update_stats(stats, frame["stats"])
                    self._adopt(frame["info"])
                    if logprobs:  # tokens held back at the end (a stop string's start)
                        yield "", logprobs
                    return
        except GeneratorExit:  # closed early: the worker stops, the stream is read to its end
            self._stop(rid, stats)
            raise
        except _Died:
            raise
        except BaseException:
            if self._inflight:  # Ctrl-C mid-frame: the stream cannot be trusted, the worker sees EOF
                self._drop()
            raise
        finally:
            if watcher is not None:
                watcher.stop()

    def _adopt(self, info: dict[str, Any]) -> None:
        warnings, notes = [*self._warnings, *info.get("warnings", ())], [*self._notes, *info.get("notes", ())]
        self._info = wire.info_of({**info, "warnings": warnings, "notes": notes})

    def _stop(self, rid: int, stats: Stats) -> None:
        self._cancel(rid)
        self._drain(stats)

    def _cancel(self, rid: int) -> None:
        if self._sock is not None and rid and self._inflight == rid:
            try:
                with self._sending:
                    wire.send(self._sock, {"op": "cancel", "id": rid})
            except OSError:
                self._drop()

    def _drain(self, stats: Stats) -> None:
        try:
            while self._inflight and self._sock is not None:
                frame = self._reply()
                if frame["op"] == "done":
                    self._inflight = 0
                    wire.update_stats(stats, frame["stats"])
                    self._adopt(frame["info"])
        except Exception:
            self._drop()  # a crash while stopping: closing never raises, the next call starts afresh

    # -- taking turns on the one connection ----------------------------------------------------
    def _acquire(self) -> object:
        """Wait for the connection (another thread's request to end); a token to release it with.
        A thread that left its own generation half-read takes over (that stream is dropped)."""
        me = threading.get_ident()
        if self._owner != me:
            self._busy.acquire()
            self._owner = me
        elif self._inflight:
            self._drop()
        token = self._holder = object()
        return token

    def _release(self, token: object) -> None:
        if self._holder is token:
            self._holder = self._owner = None
            self._busy.release()

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        token = self._acquire()
        try:
            yield
        finally:
            self._release(token)

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
                return self._call(request, doing=doing)
            except _Died as died:
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
        self.spec, self._applied = step.spec, (*self._applied, step.name)
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
        name, log = self.spec.name or self.spec.path, registry.file_for(self._key, ".log")
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

    def _crash(self, doing: str) -> _Died:
        """The worker is gone: how it died (its exit status when we started it, else its log)."""
        self._drop()
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        log = registry.file_for(self._key, ".log")
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = ""
        self._proc = None  # a new worker is another process
        if not (self.pid and registry.alive(self.pid)):
            registry.forget(
                self._key, self.pid or None
            )  # its socket and state, not its log (named in errors)
        return _Died(read_crash(code, text, doing))

    # -- the connection --------------------------------------------------------------------
    def _call(
        self, request: dict[str, Any], rid: int = 0, doing: str = "reading the prompt"
    ) -> dict[str, Any]:
        if self._inflight:  # a generation left half-read: drop it rather than mix two streams
            self._drop()
        self._connect()
        try:
            with self._sending:
                wire.send(self._sock, request)
        except OSError:
            raise self._crash(doing) from None
        self._inflight = rid
        return self._reply(doing)

    def _reply(self, doing: str = "replying") -> dict[str, Any]:
        try:
            frame = wire.recv(self._sock)
        except (OSError, wire.ProtocolError):
            frame = None
        if frame is None:
            raise self._crash(doing)
        if frame["op"] == "error":
            self._inflight = 0
            wire.raise_error(frame)
        return frame

    def _drop(self) -> None:
        self._inflight = 0
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> None:
        if self._sock is not None:
            return
        registry.runtime_folder()
        self._key = key = self.spec.key()
        sock = self._hello(registry.connect(key))
        if sock is None:
            with registry.start_lock(key):
                sock = self._hello(registry.connect(key))
                if sock is None:
                    self._start(key)
                    sock = self._hello(self._wait_listening(key))
        if sock is None:
            if self._proc is not None:  # ours, and it went away between listening and hello
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=2.0)
                if self._proc.poll() is not None:
                    raise self._crash("loading")
            raise WorkerCrashedError(f"the model worker for {self.spec.name} does not answer")
        ahead.release_ahead()  # warm: the worker started ahead is not needed
        self._sock = sock
        atexit.register(self.close)

    def _hello(self, sock: Any) -> Any:
        if sock is None:
            return None
        try:
            if wire.peer_uid(sock) not in (None, os.getuid()):
                raise OSError("the socket's process is another user's")
            hello = {"op": "hello", "protocol": PROTOCOL, "version": __version__, "key": self._key}
            wire.send(sock, {**hello, "keep_alive": self.keep_alive})
            frame = wire.recv(sock)
        except (OSError, wire.ProtocolError):
            frame = None
        if frame is None or frame["op"] != "hello":
            sock.close()
            return None
        self.pid = int(frame["pid"])
        return sock

    def _start(self, key: str) -> None:
        """Start the worker of ``key`` (the start lock held): an old one of the key is stopped first."""
        state = registry.read_state(key)
        if state is not None and registry.alive(state.pid):
            registry.stop_worker(state)  # alive but not answering: hung, or another version
        registry.forget(key)
        advice = registry.memory_advice(self.spec.path, self.spec.name or Path(self.spec.path).stem)
        self._warnings = (advice,) if advice else ()
        log = registry.file_for(key, ".log")
        self._proc = ahead.take_ahead(log) or ahead.spawn(log)
        # our pid: if we die before connecting, the worker goes too
        ahead.launch(self._proc, [key, str(self.keep_alive), self.spec.to_json(), str(os.getpid())])
        if self.keep_alive != 0:  # it outlives us; while we live, its exit is reaped (no zombie)
            threading.Thread(target=self._proc.wait, daemon=True).start()

    def _wait_listening(self, key: str) -> Any:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            sock = registry.connect(key)
            if sock is not None:
                return sock
            if self._proc is not None and self._proc.poll() is not None:
                crash = self._crash("loading")
                if crash.crash.fault:
                    raise crash
                break
            time.sleep(0.005)
        log = registry.file_for(key, ".log")
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise WorkerCrashedError(
            f"the model worker for {self.spec.name} did not start"
            + (f": {tail[0]}" if tail else "")
            + f" (its log: {log})"
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
                engine._cancel(rid)
                return

    def stop(self) -> None:
        self._stopped.set()


__all__ = ["WorkerEngine"]
