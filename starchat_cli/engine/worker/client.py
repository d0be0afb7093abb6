"""WorkerEngine: the Engine contract served by the model's worker process (server.py).

    engine = WorkerEngine(spec, keep_alive=300.0)   # nothing started yet
    engine.load()             # connect to the worker of spec.key(), or start it (detached)
    gen = engine.generate(turns, params)           # chunks arrive from the socket
    for text in gen: ...      # gen.stats is complete once the worker says "done"

Two shells starting the same worker at once share one (a flock per key). A worker that dies
mid-load or mid-reply (a signal, an abort in llama.cpp) is one :class:`WorkerCrashedError`;
the next call starts a fresh worker. This module never imports llama.cpp.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

from starchat_cli import __version__
from starchat_cli.core import defaults
from starchat_cli.core.errors import WorkerCrashedError
from starchat_cli.engine.contract import EngineInfo, Generation, Stats
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.attachment import Attachment
from starchat_cli.engine.prompting.formats import Message
from starchat_cli.engine.worker import ahead, registry
from starchat_cli.engine.worker import protocol as wire
from starchat_cli.engine.worker.spec import PROTOCOL, EngineSpec

START_TIMEOUT = 60.0  # seconds for a new worker to listen (it loads the model after that)


class WorkerEngine:
    """An Engine whose model lives in a worker process kept for ``keep_alive`` seconds (-1: forever)."""

    def __init__(self, spec: EngineSpec, keep_alive: float = defaults.KEEP_ALIVE) -> None:
        self.spec = replace(spec, path=os.path.abspath(spec.path))  # the worker runs in /
        self.keep_alive = keep_alive
        self.pid = 0  # the worker's, once connected
        self._sock: Any = None
        self._proc: subprocess.Popen[bytes] | None = None  # the worker, when this process started it
        self._key = ""
        self._ids = itertools.count(1)
        self._inflight = 0  # the id of the generation being streamed
        self._warnings: tuple[str, ...] = ()  # the client's own (memory), said with the worker's
        self._info = EngineInfo(
            name=spec.name, location=self.spec.path, default_system=spec.system, aliases=spec.aliases
        )

    # -- the contract ----------------------------------------------------------------------
    @property
    def info(self) -> EngineInfo:
        return self._info

    def load(self) -> EngineInfo:
        self._adopt(self._call({"op": "load"})["info"])
        return self._info

    def persist(self) -> None:
        if self._sock is not None:
            self._adopt(self._call({"op": "persist"})["info"])

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        return self._call({"op": "count_tokens", "messages": wire.messages_list(list(messages))})["n"]

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = True
    ) -> list[int] | None:
        request = {"op": "tokenize", "text": text, "add_special": add_special, "parse_special": parse_special}
        return self._call(request)["tokens"]

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes] | None:
        pieces = self._call({"op": "token_pieces", "tokens": list(tokens)})["pieces"]
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
        self, prompt: str, params: GenerationParams | None = None, *, cancel: threading.Event | None = None
    ) -> Generation:
        return self._generation({"op": "complete", "prompt": prompt}, params, cancel)

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
        rid = next(self._ids)
        params = params or GenerationParams()
        first = self._call({**request, "id": rid, "params": params.model_dump(mode="json")}, rid=rid)
        stats = Stats()
        wire.update_stats(stats, first["stats"])
        chunks = _Chunks(self._chunks(rid, stats, cancel), lambda: self._stop(rid, stats))
        return Generation(chunks, stats, wire.fit_of(first["fit"]), prompt_text=first.get("prompt_text", ""))

    def _chunks(self, rid: int, stats: Stats, cancel: threading.Event | None) -> Generator[str, None, None]:
        watcher = _CancelWatcher(self, rid, cancel) if cancel is not None else None
        try:
            while True:
                frame = self._reply()
                if frame["op"] == "chunk":
                    stats.generated_tokens = frame.get("n", stats.generated_tokens)  # a face's progress
                    yield frame["text"]
                elif frame["op"] == "done":
                    self._inflight = 0
                    wire.update_stats(stats, frame["stats"])
                    self._adopt(frame["info"])
                    return
        except GeneratorExit:  # closed early: the worker stops, the stream is read to its end
            self._stop(rid, stats)
            raise
        except BaseException:
            if self._inflight:  # Ctrl-C mid-frame: the stream cannot be trusted, the worker sees EOF
                self._drop()
            raise
        finally:
            if watcher is not None:
                watcher.stop()

    def _adopt(self, info: dict[str, Any]) -> None:
        self._info = wire.info_of({**info, "warnings": [*self._warnings, *info.get("warnings", ())]})

    def _stop(self, rid: int, stats: Stats) -> None:
        self._cancel(rid)
        self._drain(stats)

    def _cancel(self, rid: int) -> None:
        if self._sock is not None and self._inflight == rid:
            try:
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

    # -- the connection --------------------------------------------------------------------
    def _call(self, request: dict[str, Any], rid: int = 0) -> dict[str, Any]:
        if self._inflight:  # a generation left half-read: drop it rather than mix two streams
            self._drop()
        self._connect()
        try:
            wire.send(self._sock, request)
        except OSError:
            self._crashed(request["op"])
        self._inflight = rid
        return self._reply(request["op"])

    def _reply(self, doing: str = "generate") -> dict[str, Any]:
        try:
            frame = wire.recv(self._sock)
        except (OSError, wire.ProtocolError):
            frame = None
        if frame is None:
            self._crashed(doing)
        assert frame is not None
        if frame["op"] == "error":
            self._inflight = 0
            wire.raise_error(frame)
        return frame

    def _crashed(self, doing: str) -> None:
        self._drop()
        how = "stopped unexpectedly"
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=1.0)
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            except (subprocess.TimeoutExpired, ValueError):
                pass
        what = "loading" if doing == "load" else "replying"
        raise WorkerCrashedError(
            f"the model worker for {self.spec.name or self.spec.path} {how} while {what}: run the command "
            f"again to start a fresh one (its log: {registry.file_for(self._key, '.log')})"
        )

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

    def __init__(self, chunks: Generator[str, None, None], stop: Callable[[], None]) -> None:
        self._chunks, self._stop, self._started = chunks, stop, False

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> str:
        self._started = True
        return next(self._chunks)

    def close(self) -> None:
        if not self._started:
            self._stop()
        self._chunks.close()


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
