"""The worker: one process that owns llama.cpp for one model and serves its faces over a Unix socket.

    python -m starchat_cli.engine.worker    # started by client.py, detached; the spec comes on stdin

It listens on the key's socket in the runtime folder (registry.py), serves one request at a time
(other clients wait on the request lock: one copy of the weights), keeps the KV of its last request
(LocalEngine's prefix reuse), and exits after ``keep_alive`` seconds with no client (the latest
client's value), on ``shutdown``, on SIGTERM, and when its model file changes. A reader thread per
connection turns a ``cancel`` frame or the client's disconnect into the generation's cancel event.
"""

from __future__ import annotations

import faulthandler
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
from typing import Any

from starchat_cli import __version__
from starchat_cli.engine.contract import Generation
from starchat_cli.engine.llamacpp import import_library
from starchat_cli.engine.llamacpp.engine import LocalEngine
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.attachment import Attachment
from starchat_cli.engine.worker import protocol as wire
from starchat_cli.engine.worker import registry
from starchat_cli.engine.worker.local import local_engine
from starchat_cli.engine.worker.spec import PROTOCOL, EngineSpec

FIRST_CLIENT_GRACE = 30.0  # seconds a new worker waits for its first client, whatever its keep-alive
_TICK = 0.2  # how often the accept loop looks at the clock, the model file and the stop flag


class Connection:
    """One client: a reader thread queues its requests; ``cancel`` frames and EOF set the event of
    the request in flight (matched by id, so a late cancel never stops the next request)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.current_id: Any = None
        self.cancel = threading.Event()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                frame = wire.recv(self.sock)
                if frame is None:
                    break
                if frame["op"] == "cancel":
                    if frame.get("id") == self.current_id:
                        self.cancel.set()
                    continue
                self.requests.put(frame)
        except (OSError, wire.ProtocolError):
            pass
        self.closed = True
        self.cancel.set()
        self.requests.put(None)

    def start(self, request_id: Any) -> threading.Event:
        """A fresh cancel event for request ``request_id`` (already set if the client is gone)."""
        self.cancel = threading.Event()
        self.current_id = request_id
        if self.closed:
            self.cancel.set()
        return self.cancel

    def send(self, message: dict[str, Any]) -> None:
        wire.send(self.sock, message)


class Worker:
    def __init__(self, key: str, spec: EngineSpec, keep_alive: float, starter: int = 0) -> None:
        self.key, self.spec, self.keep_alive = key, spec, keep_alive
        self.engine: LocalEngine = local_engine(spec)
        self.lock = threading.Lock()  # one request at a time
        self.stopping = threading.Event()
        self.clients = 0  # connections open now (changed under _count)
        self._count = threading.Lock()
        self.served = False
        self.started = self.last_used = time.time()
        self.identity = _identity(spec.path)
        self.starter = starter  # the client that started us: if it dies before connecting, so do we

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        registry.runtime_folder()
        listener = registry.listen(self.key)
        listener.settimeout(_TICK)
        self._write_state()
        threading.Thread(target=self._preload, daemon=True).start()
        try:
            while not self.stopping.is_set():
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    self._check_idle()
                    continue
                sock.settimeout(None)
                if wire.peer_uid(sock) not in (None, os.getuid()):
                    sock.close()  # another user's process: never served
                    continue
                with self._count:
                    self.clients += 1
                self.served = True
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()
        finally:
            registry.forget(self.key, os.getpid(), log=True)
            listener.close()

    def _preload(self) -> None:
        """Load the model at once: a client asks for it next (an error is raised again at its ``load``)."""
        with self.lock:
            try:
                self.engine.load()
            except Exception:
                pass
            self._write_state()

    def _check_idle(self) -> None:
        if _identity(self.spec.path) != self.identity and not self.lock.locked():
            print("the model file changed: exiting", file=sys.stderr, flush=True)
            self.stopping.set()
        if not self.served and self.starter and not registry.alive(self.starter):
            self.stopping.set()  # the starter was interrupted (Ctrl-C) before it connected: nobody comes
            return
        if self.clients or self.lock.locked() or self.keep_alive < 0:
            return
        limit = self.keep_alive if self.served else max(self.keep_alive, FIRST_CLIENT_GRACE)
        if time.time() - self.last_used >= limit:
            self.stopping.set()

    def _write_state(self) -> None:
        info = self.engine.info
        registry.write_state(
            registry.WorkerState(
                key=self.key,
                pid=os.getpid(),
                name=self.spec.name,
                path=self.spec.path,
                n_ctx=info.n_ctx,
                started=self.started,
                last_used=self.last_used,
                keep_alive=self.keep_alive,
                version=__version__,
            )
        )

    # -- one client ------------------------------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(sock)
        try:
            hello = conn.requests.get()
            if hello is None or not self._hello(conn, hello):
                return
            while True:
                frame = conn.requests.get()
                if frame is None:
                    return
                try:
                    self._dispatch(conn, frame)
                except OSError:
                    return  # the client went away mid-reply
                except Exception as exc:  # a StarchatError, or a bug: the client says it in one line
                    conn.send(wire.error_frame(exc))
        finally:
            sock.close()
            self.last_used = time.time()
            with self._count:
                self.clients -= 1
                last = self.clients == 0
            if last and self.keep_alive == 0 and not self.lock.locked():
                registry.forget(self.key, os.getpid(), log=True)  # keep-alive 0: gone with the call
                os._exit(0)

    def _hello(self, conn: Connection, frame: dict[str, Any]) -> bool:
        ok = frame["op"] == "hello" and frame.get("protocol") == PROTOCOL and frame.get("key") == self.key
        ok = ok and frame.get("version") == __version__
        if not ok:
            conn.send({"op": "error", "type": "", "message": "not this worker", "exit_code": 1})
            return False
        if isinstance(frame.get("keep_alive"), (int, float)):
            self.keep_alive = float(frame["keep_alive"])  # the latest client's choice, as Ollama does
        conn.send({"op": "hello", "pid": os.getpid(), "version": __version__})
        return True

    def _dispatch(self, conn: Connection, frame: dict[str, Any]) -> None:
        op = frame["op"]
        if op == "shutdown":
            conn.send({"op": "ok"})
            self.stopping.set()
            return
        if op == "info":
            conn.send({"op": "info", "info": wire.info_dict(self.engine.info)})
            return
        if op == "leave":  # the client's last word: will the worker exit as it goes?
            with self._count:
                exiting = self.clients == 1 and self.keep_alive == 0
            conn.send({"op": "leave", "exiting": exiting and not self.lock.locked()})
            return
        if op == "status":  # `starchat ps`: answered at once, busy or not
            busy, left = self.lock.locked(), self.keep_alive - (time.time() - self.last_used)
            idle_left = None if self.keep_alive < 0 else left
            conn.send({"op": "status", "busy": busy, "idle_left": idle_left, "keep_alive": self.keep_alive})
            return
        with self.lock:
            try:
                self._request(conn, op, frame)
            finally:
                self.last_used = time.time()
                self._write_state()

    def _request(self, conn: Connection, op: str, frame: dict[str, Any]) -> None:
        engine = self.engine
        if op == "load":
            conn.send({"op": "info", "info": wire.info_dict(engine.load())})
        elif op == "persist":
            engine.persist()
            conn.send({"op": "info", "info": wire.info_dict(engine.info)})
        elif op == "count_tokens":
            conn.send({"op": "count", "n": engine.count_tokens(wire.messages_of(frame["messages"]))})
        elif op == "tokenize":
            tokens = engine.tokenize(
                frame["text"], add_special=frame["add_special"], parse_special=frame["parse_special"]
            )
            conn.send({"op": "tokens", "tokens": tokens})
        elif op == "token_pieces":  # bytes as hex: a piece may be part of a UTF-8 character
            pieces = engine.token_pieces([int(t) for t in frame["tokens"]])
            conn.send({"op": "pieces", "pieces": None if pieces is None else [p.hex() for p in pieces]})
        elif op in ("generate", "complete", "infill"):
            cancel = conn.start(frame.get("id"))
            self._stream(conn, self._begin(op, frame, cancel), cancel)
        else:
            raise ValueError(f"unknown request {op!r}")

    def _begin(self, op: str, frame: dict[str, Any], cancel: threading.Event) -> Generation:
        params = GenerationParams(**frame.get("params") or {})
        if op == "complete":
            return self.engine.complete(frame["prompt"], params, cancel=cancel)
        if op == "infill":
            extra = [(p, t) for p, t in frame.get("extra", [])]
            return self.engine.infill(
                frame["prefix"], frame["suffix"], params, extra=extra, path=frame.get("path"),
                repo=frame.get("repo"), cancel=cancel,
            )  # fmt: skip
        attachment = Attachment(**frame["attachment"]) if frame.get("attachment") else None
        turns = wire.messages_of(frame["turns"])
        return self.engine.generate(
            turns, params, system=frame.get("system"), attachment=attachment, cancel=cancel
        )

    def _stream(self, conn: Connection, gen: Generation, cancel: threading.Event) -> None:
        conn.send(
            {
                "op": "started",
                "stats": wire.stats_dict(gen.stats),
                "fit": wire.fit_dict(gen.fit),
                "prompt_text": gen.prompt_text,
            }
        )
        try:
            for chunk in gen:
                frame = {"op": "chunk", "text": chunk, "n": gen.stats.generated_tokens}  # live counts
                entries = gen.take_logprobs()
                conn.send({**frame, "logprobs": wire.logprobs_list(entries)} if entries else frame)
                if cancel.is_set():
                    break
        finally:
            gen.close(None)
        done = {"op": "done", "stats": wire.stats_dict(gen.stats), "info": wire.info_dict(self.engine.info)}
        conn.send({**done, "logprobs": wire.logprobs_list(gen.take_logprobs())})


def _identity(path: str) -> tuple[int, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def main() -> None:
    """Import llama.cpp, then read the launch line (ahead.py) and serve; no line: exit at once."""
    faulthandler.enable()  # a native crash (SIGSEGV, abort) leaves the Python stack in KEY.log
    import_library()  # while the client still resolves what to run (started ahead of need)
    line = sys.stdin.readline()
    if not line.strip():
        os._exit(0)  # started ahead, not needed
    key, keep_alive, spec_json, starter = json.loads(line)
    worker = Worker(key, EngineSpec.from_json(spec_json), float(keep_alive), int(starter))

    def stop(signum: int, frame: Any) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # no interpreter teardown under llama.cpp's threads: the files are already gone


__all__ = ["Worker", "main"]
