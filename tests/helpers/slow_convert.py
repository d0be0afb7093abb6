"""``starchat`` with every conversion slowed down, so that a test can signal it mid-write.

    python -m tests.helpers.slow_convert [--no-tmpfile] convert CHECKPOINT -o OUT.gguf

Each progress report of the converter (after a chunk is written) waits ``DELAY`` seconds: the
hook the caller injects is the converter's own ``progress`` callback, wrapped. ``--no-tmpfile``
plays a platform without ``O_TMPFILE``, where the output goes to a hidden named temp file.
Everything else is the real CLI (its signal handling, messages and exit codes).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time

DELAY = 0.3  # seconds after each chunk: a tiny model takes seconds to write, time enough to signal


def slowed(convert):
    """``convert_checkpoint`` whose progress callback waits DELAY seconds after each chunk."""
    signature = inspect.signature(convert)

    @functools.wraps(convert)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        report = bound.arguments.get("progress")

        def progress(done: int, total: int) -> None:
            if report is not None:
                report(done, total)
            time.sleep(DELAY)

        bound.arguments["progress"] = progress
        return convert(*bound.args, **bound.kwargs)

    return run


def main() -> None:
    import converters.convert

    args = sys.argv[1:]
    if args[:1] == ["--no-tmpfile"]:
        args = args[1:]
        if hasattr(os, "O_TMPFILE"):
            del os.O_TMPFILE  # converters/outfile.py then writes a named .starchat-tmp-*.part file
    converters.convert.convert_checkpoint = slowed(converters.convert.convert_checkpoint)
    sys.argv = ["starchat", *args]
    from starchat_cli.__main__ import main as starchat

    starchat()


if __name__ == "__main__":
    main()
