"""The ``starchat`` command: a Typer app whose commands live one module per group.

Only typer is imported at start-up; rich, llama_cpp and the engine are imported by the
command that needs them, so ``starchat --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import typer
from typer.core import TyperCommand, TyperGroup

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
    """Turns predictable failures into one-line messages and exit codes, never tracebacks.

    Built by :func:`lazy_command`, its subcommands are turned into Click commands only when
    one is looked up (typer's conversion inspects every parameter of every command: most of
    ``starchat --help``'s time); the command list is written from each command's help text.
    """

    _lazy: dict[str, Callable[[], Any]]  # name -> builds the Click command
    _lazy_help: dict[str, Any]  # name -> a parameterless stand-in with the same help

    def list_commands(self, ctx: Any) -> list[str]:
        lazy = getattr(self, "_lazy", {})
        return [*self.commands, *(name for name in lazy if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        lazy = getattr(self, "_lazy", {})
        if cmd_name not in self.commands and cmd_name in lazy:
            self.commands[cmd_name] = lazy[cmd_name]()
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        stand_ins = getattr(self, "_lazy_help", {})
        if not stand_ins:
            return super().format_commands(ctx, formatter)
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name) or stand_ins.get(name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])

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


def lazy_command() -> Any:
    """The root Click group of ``app`` with its subcommands converted on first use.

    The same group typer builds (``typer.main.get_command(app)``: tests use that one), but
    ``--help`` converts none of the subcommands and running one converts only it.
    """
    import inspect

    import typer.main as tm

    commands, groups = app.registered_commands, app.registered_groups
    app.registered_commands, app.registered_groups = [], []
    try:
        root = tm.get_command(app)  # the group, its callback and options only
    finally:
        app.registered_commands, app.registered_groups = commands, groups
    short, markup = app.pretty_exceptions_short, app.rich_markup_mode
    lazy: dict[str, Callable[[], Any]] = {}
    stand_ins: dict[str, Any] = {}
    for info in commands:
        name = info.name or tm.get_command_name(info.callback.__name__)
        text = inspect.getdoc(info.callback) if info.help is None else inspect.cleandoc(info.help)
        lazy[name] = lambda info=info: tm.get_command_from_info(
            info, pretty_exceptions_short=short, rich_markup_mode=markup
        )
        stand_ins[name] = TyperCommand(name=name, help=text, short_help=info.short_help, hidden=info.hidden)
    for group in groups:
        solved = tm.solve_typer_info_defaults(group)
        lazy[solved.name] = lambda group=group: tm.get_group_from_info(
            group,
            pretty_exceptions_short=short,
            rich_markup_mode=markup,
            suggest_commands=app.suggest_commands,
        )
        stand_ins[solved.name] = TyperGroup(
            name=solved.name, help=solved.help, short_help=solved.short_help, hidden=solved.hidden
        )
    root._lazy, root._lazy_help = lazy, stand_ins
    return root


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
        lazy_command()(prog_name="starchat")
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
