"""Signals: SIGTERM ends a long command the way Ctrl-C does, and no Ctrl-C is ever lost.

    from starchat_cli.cli.signals import keep_interrupts, terminate_like_ctrl_c

    keep_interrupts()  # once, at start-up (starchat_cli/__main__.py does it)
    terminate_like_ctrl_c()  # convert, quantize, pull: `kill PID` cleans up as Ctrl-C does

Python raises KeyboardInterrupt at the next line of Python the main thread runs. While
llama.cpp loads a model, that line is in a ctypes callback (llama.cpp's log callback runs
thousands of times per load); ctypes cannot pass an exception up through C, so it prints
"Exception ignored on calling ctypes callback function" and drops it: the Ctrl-C is lost,
and the answer printed with exit 0. :func:`keep_interrupts` catches such a dropped
interrupt (``sys.unraisablehook``) and raises it again in the main thread once the callback
has returned, so it surfaces where Python code can see it: exit 130, nothing on stderr but
"starchat: error: interrupted".
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from typing import Any


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM: every ``except KeyboardInterrupt`` cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def terminate_like_ctrl_c() -> None:
    """For ``convert``, ``quantize`` and ``pull``: `kill PID` removes temp files as Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


_previous_hook: Any = None


def keep_interrupts() -> None:
    """Re-raise in the main thread a KeyboardInterrupt Python had to drop (see the module's docstring)."""
    global _previous_hook
    if _previous_hook is None:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _on_unraisable


def _on_unraisable(args: Any) -> None:
    exc_type = args.exc_type
    if (
        exc_type is None
        or not issubclass(exc_type, KeyboardInterrupt)
        or threading.current_thread() is not threading.main_thread()
    ):
        _previous_hook(args)
        return
    signum = signal.SIGTERM if issubclass(exc_type, Terminated) else signal.SIGINT
    hook_done = _thread.allocate_lock()
    hook_done.acquire()
    threading.Thread(target=_interrupt_later, args=(hook_done, signum), daemon=True).start()
    # The last line of this hook: no Python runs between it and the return into C, so the
    # signal raised by the thread cannot fire in here (an exception in this hook is dropped too).
    hook_done.release()


def _interrupt_later(hook_done: Any, signum: signal.Signals) -> None:
    """Signal the main thread again once the hook has returned. If the main thread is back in
    a callback by then, the interrupt is dropped there again and this runs again, until it
    lands in ordinary Python code (at the latest when the C call returns)."""
    hook_done.acquire()
    _thread.interrupt_main(signum)


__all__ = ["Terminated", "keep_interrupts", "terminate_like_ctrl_c"]
