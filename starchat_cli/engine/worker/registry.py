"""The runtime folder of the model workers: one socket, state file, log and start lock per worker.

    folder = runtime_folder()                  # created 0700; refused if another user's or open to others
    with start_lock(key): ...                  # two shells starting the same worker: one starts it
    for state in live_workers(): ...           # what `starchat ps` lists (stale entries removed)
    stop_worker(state)                         # SIGTERM, then SIGKILL after a grace period

The folder is ``core.paths``' ``runtime_dir``: ``$XDG_RUNTIME_DIR/starchat`` or the cache dir's ``run/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from starchat_cli.core.errors import StarchatError
from starchat_cli.core.fsutil import atomic_write_text
from starchat_cli.core.paths import get_paths

_SUN_PATH = (
    100  # sockaddr_un holds 108 bytes on Linux (104 on macOS): longer paths go through the folder's fd
)


@dataclass
class WorkerState:
    """What a worker says about itself in ``KEY.json`` (written atomically, on start and after each request)."""

    key: str
    pid: int
    name: str
    path: str
    n_ctx: int = 0
    started: float = 0.0
    last_used: float = 0.0
    keep_alive: float = 0.0  # seconds; -1: forever
    version: str = ""


def runtime_folder(create: bool = True) -> Path:
    """The folder, checked: ours alone (owner = us, no group/other access), else a one-line error."""
    folder = get_paths().runtime_dir
    if create:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    try:
        st = folder.stat()
    except FileNotFoundError:
        return folder
    if st.st_uid != os.getuid():
        raise StarchatError(f"refusing the runtime folder {folder}: it belongs to uid {st.st_uid}, not you")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise StarchatError(
            f"refusing the runtime folder {folder}: others may use it "
            f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 700 it or remove it"
        )
    return folder


def file_for(key: str, suffix: str) -> Path:
    """``KEY.sock``, ``KEY.json``, ``KEY.log`` in the runtime folder."""
    return get_paths().runtime_dir / f"{key}{suffix}"


@contextlib.contextmanager
def start_lock(key: str) -> Iterator[None]:
    """An exclusive flock: whoever holds it checks for ``key``'s worker and starts one if none.
    One file for every key (held for a moment per start), so none is left behind per model."""
    fd = os.open(get_paths().runtime_dir / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def address(path: Path) -> Iterator[str]:
    """The address to bind or connect ``path`` by: the path itself, or, when it is too long for a
    socket address, the same file through an open descriptor of its folder (/proc/self/fd/N/NAME)."""
    if len(os.fsencode(str(path))) < _SUN_PATH or not os.path.isdir("/proc/self/fd"):
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def connect(key: str) -> socket.socket | None:
    """A connection to the worker of ``key``; None when there is none (no socket, or it refuses)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with address(file_for(key, ".sock")) as where:
            sock.connect(where)
    except OSError:
        sock.close()
        return None
    return sock


def listen(key: str) -> socket.socket:
    """The worker's listening socket (a stale file of the same name is replaced)."""
    path = file_for(key, ".sock")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with address(path) as where:
        sock.bind(where)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def write_state(state: WorkerState) -> None:
    atomic_write_text(file_for(state.key, ".json"), json.dumps(asdict(state)))


def read_state(key: str) -> WorkerState | None:
    try:
        return WorkerState(**json.loads(file_for(key, ".json").read_text("utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def forget(key: str, pid: int | None = None, *, log: bool = False) -> None:
    """Remove a worker's socket and state (only if they are still ``pid``'s, when given), and with
    ``log`` its log too (a clean exit; a crashed worker's log stays for the user to read)."""
    if pid is not None:
        state = read_state(key)
        if state is not None and state.pid != pid:
            return  # a newer worker already took the key
    for suffix in (".sock", ".json", ".log") if log else (".sock", ".json"):
        with contextlib.suppress(FileNotFoundError):
            file_for(key, suffix).unlink()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def live_workers() -> list[WorkerState]:
    """The workers running now, oldest first; stale entries (process gone) are removed."""
    folder = runtime_folder(create=False)
    if not folder.is_dir():
        return []
    states = []
    for path in sorted(folder.glob("*.json")):
        state = read_state(path.stem)
        if state is None or not alive(state.pid):
            forget(path.stem)
            continue
        states.append(state)
    return sorted(states, key=lambda s: s.started)


def status(state: WorkerState) -> dict[str, Any] | None:
    """What the worker says of itself now: ``busy`` (a request running) and ``idle_left`` (seconds
    before it exits unless asked again; None: never). None when it does not answer."""
    from starchat_cli.engine.worker import protocol as wire
    from starchat_cli.engine.worker.spec import PROTOCOL

    sock = connect(state.key)
    if sock is None:
        return None
    try:
        with sock:
            wire.send(sock, {"op": "hello", "protocol": PROTOCOL, "version": state.version, "key": state.key})
            if (wire.recv(sock) or {}).get("op") != "hello":
                return None
            wire.send(sock, {"op": "status"})
            return wire.recv(sock)
    except (OSError, wire.ProtocolError):
        return None


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (0 where unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_advice(path: str, name: str) -> str | None:
    """Before starting a worker for ``path``: a warning when its weights do not fit in the memory
    free now, naming the loaded model whose ``stop`` frees the most; None when they fit."""
    from starchat_cli.core.units import format_bytes

    try:
        need = os.path.getsize(path)
        available = next(
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemAvailable:")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    if need <= available:
        return None
    words = f"{name} needs about {format_bytes(need)} of memory and {format_bytes(available)} is free"
    loaded = sorted(((rss_bytes(s.pid), s.name) for s in live_workers()), reverse=True)
    if loaded and loaded[0][0]:
        return f"{words}: `starchat stop {loaded[0][1]}` frees {format_bytes(loaded[0][0])}"
    return f"{words}: it may load slowly or fail"


def stop_worker(state: WorkerState, grace: float = 5.0) -> None:
    """SIGTERM the worker (it unloads and removes its files), SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(state.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
    forget(state.key, state.pid, log=True)


__all__ = [
    "WorkerState",
    "address",
    "alive",
    "connect",
    "file_for",
    "forget",
    "listen",
    "live_workers",
    "memory_advice",
    "read_state",
    "rss_bytes",
    "runtime_folder",
    "start_lock",
    "stop_worker",
    "write_state",
]
