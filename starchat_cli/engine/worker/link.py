"""The client's side of one worker connection: find or start the worker, send, read, take turns.

    link = Link(spec, keep_alive)
    with link.turn():                      # one request on the socket at a time (serve's threads queue)
        reply = link.call({"op": "load"})  # connects first: a running worker of spec.key(), or a new one
    link.drop()                            # the worker sees EOF; the next call connects again

A worker that goes away mid-request raises :class:`Died` with how it died (its exit status when
this process started it, else the faulthandler lines of its log): client.py heals it or says it.
Two shells starting the same worker at once share one (one start lock). This module never
imports llama.cpp.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from starchat_cli import __version__
from starchat_cli.core.errors import WorkerCrashedError
from starchat_cli.engine.worker import ahead, registry
from starchat_cli.engine.worker import protocol as wire
from starchat_cli.engine.worker.healing import Crash, read_crash
from starchat_cli.engine.worker.spec import PROTOCOL, EngineSpec

START_TIMEOUT = 60.0  # seconds for a new worker to listen (it loads the model after that)


class Died(Exception):
    """The worker went away mid-request: healed (a retry) or said (WorkerCrashedError) above."""

    def __init__(self, crash: Crash) -> None:
        super().__init__(crash.describe())
        self.crash = crash


class Link:
    """One connection to the worker of ``spec`` (replaced when the spec changes after a crash)."""

    def __init__(self, spec: EngineSpec, keep_alive: float) -> None:
        self.spec = spec
        self.keep_alive = keep_alive
        self.pid = 0  # the worker's, once connected
        self.key = ""
        self.advice = ""  # what to stop first, said when this link started a worker short of memory
        self.inflight = 0  # the id of the generation being streamed
        self._sock: Any = None
        self._proc: subprocess.Popen[bytes] | None = None  # the worker, when this process started it
        self._ids = itertools.count(1)
        self._sending = threading.Lock()  # a cancel frame from a watcher thread never splits a request
        self._busy = threading.Lock()  # one request on the socket at a time
        self._owner: int | None = None  # the thread holding _busy
        self._holder: object | None = None  # the request holding it (a generation: until it ends)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def log(self) -> Path:
        return registry.file_for(self.key, ".log")

    def next_id(self) -> int:
        return next(self._ids)

    # -- taking turns ----------------------------------------------------------------------
    def acquire(self) -> object:
        """Wait for the connection (another thread's request to end); a token to release it with.
        A thread that left its own generation half-read takes over (that stream is dropped)."""
        me = threading.get_ident()
        if self._owner != me:
            self._busy.acquire()
            self._owner = me
        elif self.inflight:
            self.drop()
        token = self._holder = object()
        return token

    def release(self, token: object) -> None:
        if self._holder is token:
            self._holder = self._owner = None
            self._busy.release()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        token = self.acquire()
        try:
            yield
        finally:
            self.release(token)

    # -- requests --------------------------------------------------------------------------
    def call(
        self, request: dict[str, Any], rid: int = 0, doing: str = "reading the prompt"
    ) -> dict[str, Any]:
        """Send ``request`` (``rid``: a generation's id, whose frames follow) and read its first reply."""
        if self.inflight:  # a generation left half-read: drop it rather than mix two streams
            self.drop()
        self._connect()
        try:
            with self._sending:
                wire.send(self._sock, request)
        except OSError:
            raise self.crash(doing) from None
        self.inflight = rid
        return self.reply(doing)

    def reply(self, doing: str = "replying") -> dict[str, Any]:
        try:
            frame = wire.recv(self._sock)
        except (OSError, wire.ProtocolError):
            frame = None
        if frame is None:
            raise self.crash(doing)
        if frame["op"] == "error":
            self.inflight = 0
            wire.raise_error(frame)
        return frame

    def cancel(self, rid: int) -> None:
        """Ask the worker to stop generation ``rid`` (from any thread)."""
        if self._sock is not None and rid and self.inflight == rid:
            try:
                with self._sending:
                    wire.send(self._sock, {"op": "cancel", "id": rid})
            except OSError:
                self.drop()

    def drop(self) -> None:
        self.inflight = 0
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def leave(self) -> None:
        """Leave the worker; when it exits with us (keep-alive 0, no other client), wait for that."""
        if self._sock is None:
            return
        exiting = False
        if not self.inflight:
            try:
                exiting = bool(self.call({"op": "leave"}).get("exiting"))
            except Exception:
                pass  # gone already
        self.drop()
        deadline = time.monotonic() + 2.0
        while exiting and registry.alive(self.pid) and time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break  # ours: reaped
            time.sleep(0.002)

    def crash(self, doing: str) -> Died:
        """The worker is gone: how it died (its exit status when we started it, else its log)."""
        self.drop()
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            text = ""
        self._proc = None  # a new worker is another process
        if not (self.pid and registry.alive(self.pid)):
            registry.forget(self.key, self.pid or None)  # its socket and state, not its log (named in errors)
        return Died(read_crash(code, text, doing))

    # -- finding or starting the worker ------------------------------------------------------
    def _connect(self) -> None:
        if self._sock is not None:
            return
        registry.runtime_folder()
        self.key = key = self.spec.key()
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
                    raise self.crash("loading")
            raise WorkerCrashedError(f"the model worker for {self.spec.name} does not answer")
        ahead.release_ahead()  # warm: the worker started ahead is not needed
        self._sock = sock
        atexit.register(self.leave)

    def _hello(self, sock: Any) -> Any:
        if sock is None:
            return None
        try:
            if wire.peer_uid(sock) not in (None, os.getuid()):
                raise OSError("the socket's process is another user's")
            hello = {"op": "hello", "protocol": PROTOCOL, "version": __version__, "key": self.key}
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
        self.advice = (
            registry.memory_advice(self.spec.path, self.spec.name or Path(self.spec.path).stem) or ""
        )
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
                died = self.crash("loading")
                if died.crash.fault:
                    raise died
                break
            time.sleep(0.005)
        log = registry.file_for(key, ".log")
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise WorkerCrashedError(
            f"the model worker for {self.spec.name} did not start"
            + (f": {tail[0]}" if tail else "")
            + f" (its log: {log})"
        )


__all__ = ["Died", "Link", "START_TIMEOUT"]
