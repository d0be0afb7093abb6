"""The ``starchat`` command: a Typer app whose commands live one module per group.

Only typer is imported at start-up; rich, llama_cpp and the engine are imported by the
command that needs them, so ``starchat --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from starchat_cli import __version__
from starchat_cli.core.errors import ExitCode, StarchatError

EXIT_READER_GONE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`


def reader_gone() -> None:
    """The reader of stdout went away: point stdout at /dev/null so nothing more fails on it.

    Without this, the interpreter's last flush of the dead pipe prints "Exception ignored ..."
    on stderr at exit. One mechanism for every command: the group's ``invoke`` and ``main``
    below call it, so no command needs its own handler.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def say_error(message: str) -> None:
    """One line on stderr, the same shape for every failure."""
    print(f"starchat: error: {message}", file=sys.stderr, flush=True)


class StarchatGroup(TyperGroup):
    """Turns predictable failures into one-line messages and exit codes, never tracebacks."""

    def invoke(self, ctx: Any) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # buffered output meets a closed pipe here, not at interpreter exit
            return result
        except BrokenPipeError:
            reader_gone()
            ctx.exit(EXIT_READER_GONE)
        except StarchatError as exc:
            say_error(exc.message)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            from starchat_cli.cli.signals import Terminated

            terminated = isinstance(exc, Terminated)  # SIGTERM in convert/quantize/pull
            print(file=sys.stderr)
            say_error("terminated" if terminated else "interrupted")
            ctx.exit(ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED)
        except Exception as exc:
            if type(exc).__module__.startswith(("typer", "click")) or os.environ.get("STARCHAT_DEBUG"):
                raise  # Exit, Abort, usage errors: Click reports those itself
            say_error(
                f"unexpected {type(exc).__name__}: {exc} (a bug: please report it; "
                "STARCHAT_DEBUG=1 shows the traceback)"
            )
            ctx.exit(ExitCode.ERROR)


HELP = """\
starchat: a terminal coding assistant running the StarChat models locally.

\b
  starchat ask "write a python function that reverses a string"
  cat app.py | starchat ask "explain this"
  starchat ask --code "a bash script that counts lines in *.py" > count.sh
  starchat edit app.py "rename load_config to read_config"   # diff, then Apply? [y/N]
  starchat complete app.py:42                                 # fill in the middle at line 42

\b
Models: starchat2 (default), starchat-beta, starchat-alpha, starcoder2-instruct, demo;
for completion starcoder2-3b/7b/15b; a name from `starchat list`, or a path to a .gguf file.
"""

app = typer.Typer(
    name="starchat",
    cls=StarchatGroup,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        print(f"starchat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """starchat: a terminal coding assistant running the StarChat models locally."""


def _register() -> None:
    from starchat_cli.cli import (
        ask,
        cache,
        chat,
        complete,
        completion,
        convert,
        doctor,
        edit,
        models,
        pull,
        serve,
    )

    ask.register(app)
    complete.register(app)
    models.register(app)
    doctor.register(app)
    serve.register(app)
    pull.register(app)
    convert.register(app)
    chat.register(app)
    cache.register(app)
    edit.register(app)
    completion.register(app)


_register()


def _is_terminal() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def main() -> None:
    if os.environ.get("_STARCHAT_COMPLETE"):  # a shell asks for completions (starchat completion)
        from starchat_cli.cli.completion import enable_shell_classes

        enable_shell_classes()
    if len(sys.argv) == 1 and _is_terminal():
        sys.argv.append("chat")  # a bare `starchat` on a terminal opens the chat; piped, it prints help
    try:
        app(prog_name="starchat")
    except BrokenPipeError:
        reader_gone()  # the reader went away (`starchat ask ... | head`): stop quietly
        sys.exit(EXIT_READER_GONE)
    except SystemExit as exc:
        # Typer turns EPIPE outside a command (help, usage text) into exit 1 and wraps
        # sys.stdout in click's PacifyFlushWrapper: that wrapper is the sign the reader left.
        if exc.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            reader_gone()
            sys.exit(EXIT_READER_GONE)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            reader_gone()
            sys.exit(EXIT_READER_GONE)
        raise
