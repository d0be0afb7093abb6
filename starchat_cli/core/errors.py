"""Errors a user can cause or fix, each with its own exit code and a one-line message.

The faces (CLI, TUI, server) catch :class:`StarchatError` and show ``message``; nothing
predictable ever reaches the user as a traceback.
"""

from __future__ import annotations


class ExitCode:
    """Process exit codes, one per kind of failure (documented in the README)."""

    OK = 0
    ERROR = 1  # anything not covered below
    USAGE = 2  # bad flags or arguments (also what Click uses)
    CONFIG = 3  # invalid config file or environment variable
    MODEL_NOT_FOUND = 4  # unknown model name, missing file, nothing downloaded
    MODEL_LOAD = 5  # corrupt, truncated or unsupported model file
    INPUT = 6  # empty input, binary stdin, unreadable --file
    CONTEXT = 7  # the question does not fit in the context window
    NO_CODE = 8  # --code, but the answer had no fenced code block
    CONVERT = 9  # a checkpoint cannot be converted or quantized (bad input, unsupported)
    REMOTE = 10  # a remote endpoint cannot be reached, refuses the key, or answers an error
    NOT_APPLIED = 11  # `edit`: the rewrite was declined, refused (file changed, elided code) or not safe
    OUTPUT = 12  # a file or folder the user named cannot be written (read-only, not a folder, ...)
    WORKER = 13  # the model's worker process died (a signal, an abort in llama.cpp) mid-load or mid-reply
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    TERMINATED = 143  # SIGTERM during convert, quantize or pull (128 + SIGTERM), cleaned up like Ctrl-C


class StarchatError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(StarchatError):
    exit_code = ExitCode.CONFIG


class ModelNotFoundError(StarchatError):
    exit_code = ExitCode.MODEL_NOT_FOUND


class ModelLoadError(StarchatError):
    exit_code = ExitCode.MODEL_LOAD


class InputError(StarchatError):
    exit_code = ExitCode.INPUT


class FimUnsupportedError(InputError):
    """Fill-in-the-middle asked of a model whose vocabulary has no FIM tokens (exit 6, HTTP 400)."""


class ContextOverflowError(StarchatError):
    exit_code = ExitCode.CONTEXT


class NoCodeError(StarchatError):
    exit_code = ExitCode.NO_CODE


class NotAppliedError(StarchatError):
    """`edit`/`undo`: nothing was written (declined, refused as unsafe, the file changed, elided code)."""

    exit_code = ExitCode.NOT_APPLIED


class ConversionError(StarchatError):
    """A checkpoint cannot be converted, or a GGUF cannot be quantized: bad or unsupported input."""

    exit_code = ExitCode.CONVERT


class OutputError(StarchatError):
    """A file or folder the user named cannot be written (see :func:`starchat_cli.core.fsutil.output_error`)."""

    exit_code = ExitCode.OUTPUT


class WorkerCrashedError(StarchatError):
    """The process that holds the model (engine/worker/) died while loading or replying: a native
    crash or a kill. The next call starts a fresh worker."""

    exit_code = ExitCode.WORKER
