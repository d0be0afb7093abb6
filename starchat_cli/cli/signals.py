"""SIGTERM ends a long command the way Ctrl-C does: the same cleanup, its own exit code."""

from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM: every ``except KeyboardInterrupt`` cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def terminate_like_ctrl_c() -> None:
    """For ``convert``, ``quantize`` and ``pull``: `kill PID` removes temp files as Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
