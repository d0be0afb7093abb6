"""llama.cpp's log, kept in a small buffer instead of stderr: a load error is then said in one
line (the last error line), and ``STARCHAT_LLAMA_LOG=1`` shows the whole log."""

from __future__ import annotations

import ctypes
import os
from collections import deque

_LOG_LINES: deque[str] = deque(maxlen=50)
_log_callback = None


def install_log_capture() -> None:
    """Route llama.cpp's log to a buffer: errors are summarised in one line, not dumped.

    Installed at every load, since other code (the quantizer) may have set its own since.
    """
    global _log_callback
    import llama_cpp

    if _log_callback is None:

        @llama_cpp.llama_log_callback
        def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            line = text.decode("utf-8", errors="replace").strip()
            if line:
                _LOG_LINES.append(line)
            if os.environ.get("STARCHAT_LLAMA_LOG"):
                os.write(2, text)

        _log_callback = capture  # keep a reference: ctypes callbacks must outlive their use
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def clear_log() -> None:
    """Forget earlier lines (before a load attempt whose errors are to be reported)."""
    _LOG_LINES.clear()


def last_llama_error() -> str:
    for line in reversed(_LOG_LINES):
        low = line.lower()
        if "error" in low or "failed" in low or "invalid" in low:
            return line
    return ""


__all__ = ["clear_log", "install_log_capture", "last_llama_error"]
