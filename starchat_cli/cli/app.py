"""The ``starchat`` command: a Typer app whose commands live one module per group.

Only typer is imported at start-up: ``starchat --help`` lists the commands from the
``COMMANDS`` table below, and running a command imports only its module (rich, llama_cpp
and the engine are imported inside the commands that need them). ``app`` is the fully
registered Typer app, for tests and ``typer.main.get_command``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import typer
from typer.core import TyperCommand, TyperGroup

from starchat_cli import __version__
from starchat_cli.core.errors import ExitCode, StarchatError

# What typer builds for a registered command or sub-app (typer's own Click classes).
Subcommand = TyperCommand | TyperGroup

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Callable[[], Subcommand]] = {}  # name -> builds the Click command
        self.lazy_help: dict[str, Subcommand] = {}  # name -> a parameterless stand-in, same help

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(name for name in self.lazy if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.commands[cmd_name] = self.lazy[cmd_name]()
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        if not self.lazy_help:
            return super().format_commands(ctx, formatter)
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name) or self.lazy_help.get(name)
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


def _version(value: bool) -> None:
    if value:
        print(f"starchat {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """starchat: a terminal coding assistant running the StarChat models locally."""


def root_app() -> typer.Typer:
    """A new ``starchat`` app: the group, its callback and options, no subcommands yet."""
    root = typer.Typer(
        name="starchat",
        cls=StarchatGroup,
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    root.callback()(_root)
    return root


# The subcommands in the order `starchat --help` lists them: (name, the module cli/MODULE.py
# whose register() adds it, the first paragraph of its help). `starchat --help` reads this
# table and imports no command module; running a command imports only its module.
# tests/test_import_hygiene.py checks the table against the modules' own help, byte for byte.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("ask", "ask", "Ask one question and stream the answer."),
    (
        "complete",
        "complete",
        "Fill in the middle: the model writes the text at a cursor, given what comes before and after.",
    ),
    ("list", "models", "List local models (name, family, quant, size, context, path)."),
    ("info", "models", "Show what a model file holds: architecture, parameters, quant, context, template."),
    ("add", "models", "Register a GGUF file you already have under a name (no download)."),
    ("rm", "models", "Forget a model; delete its file when starchat made or copied it."),
    ("paths", "models", "Print where starchat keeps its config, models, sessions and cache."),
    (
        "doctor",
        "doctor",
        "Check the set-up: versions, llama.cpp build features (CUDA, Metal, BLAS, AVX2/AVX512),\n"
        "GPUs and their free memory, threads, disk space, caches, and each local model with the\n"
        "GPU offload plan starchat would use for it.",
    ),
    (
        "serve",
        "serve",
        "Serve a model over an OpenAI-compatible HTTP API (for editors, scripts, other tools).",
    ),
    ("pull", "pull", "Download a model from the Hugging Face Hub into its cache and register it."),
    ("convert", "convert", "Convert a Hugging Face checkpoint folder to a GGUF file llama.cpp can run."),
    (
        "quantize",
        "convert",
        "Quantize a GGUF file with llama.cpp's quantizer (Q4_K_M, Q5_K_M, Q6_K, Q8_0, ...).",
    ),
    (
        "chat",
        "chat",
        "Open the full-screen chat: multi-turn sessions, streamed Markdown replies, code blocks\n"
        "you can copy, save or insert into files (diff preview, confirm, undo).",
    ),
    ("edit", "edit", "Let the model rewrite FILE as INSTRUCTION says; show the diff and ask before writing."),
    ("undo", "edit", "Revert the last file write of starchat (edit, or Save/insert in the chat)."),
    (
        "ps",
        "workers",
        "List the models kept loaded between calls: model, memory, context, idle time left, pid.",
    ),
    (
        "stop",
        "workers",
        "Unload a model kept loaded between calls (its worker exits), or all of them with --all.",
    ),
    ("completion", "completion", "Print (or --install) the Tab-completion script for bash, zsh or fish."),
    ("sessions", "chat", "Saved chat sessions (SQLite, under the data dir: `starchat paths`)."),
    (
        "cache",
        "cache",
        "The prompt cache: llama.cpp's state after each long prompt, kept on disk so that the same\n"
        "prefix (a piped file, a resumed chat, a system prompt) is never evaluated twice, across runs.",
    ),
)
_full_app: typer.Typer | None = None


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"starchat_cli.cli.{name}")


def full_app() -> typer.Typer:
    """The app with every command registered (importing every command module): what tests
    and ``typer.main.get_command`` use. ``starchat_cli.cli.app.app`` is this too."""
    global _full_app
    if _full_app is None:
        _full_app = root_app()
        for module in dict.fromkeys(module for _, module, _ in COMMANDS):
            _module(module).register(_full_app)
    return _full_app


def __getattr__(name: str) -> Any:
    if name == "app":
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _module_commands(module: str) -> dict[str, Subcommand]:
    """The Click commands cli/MODULE.py registers, converted by typer's public ``get_command``.

    The module registers on an app of its own that has a callback, so typer always builds a
    group (one command alone would become the app itself) whose subcommands we take.
    """
    import typer.main

    scratch = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    scratch.callback()(lambda: None)
    _module(module).register(scratch)
    group = typer.main.get_command(scratch)
    assert isinstance(group, TyperGroup)  # a Typer with a callback is always a group
    return {name: cmd for name, cmd in group.commands.items() if isinstance(cmd, (TyperCommand, TyperGroup))}


def _build(name: str, module: str) -> Subcommand:
    commands = _module_commands(module)
    if name not in commands:
        raise LookupError(f"cli/{module}.py registers no command {name!r} (see COMMANDS)")
    return commands[name]


def lazy_command() -> StarchatGroup:
    """The root Click group of ``app`` with each subcommand's module imported, and the command
    converted, on first use: the group typer builds (``typer.main.get_command(app)``) as far
    as a user can tell, but ``--help`` imports and converts none of the subcommands."""
    import typer.main

    root = typer.main.get_command(root_app())  # the group, its callback and options only
    assert isinstance(root, StarchatGroup)  # root_app() is built with cls=StarchatGroup
    root.lazy = {name: functools.partial(_build, name, module) for name, module, _ in COMMANDS}
    root.lazy_help = {name: TyperCommand(name=name, help=text) for name, _, text in COMMANDS}
    return root


def _is_terminal() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _start_worker_ahead() -> None:
    """ask, edit, complete: a model worker starts importing llama.cpp now, before typer is even
    imported here, in case the call needs a new one (engine/worker/ahead.py says when)."""
    args = sys.argv[1:]
    if args[:1] in (["ask"], ["edit"], ["complete"]) and not {"-h", "--help", "-e", "--endpoint"} & set(args):
        from starchat_cli.engine.worker.ahead import start_ahead

        start_ahead()


def main() -> None:
    if os.environ.get("_STARCHAT_COMPLETE"):  # a shell asks for completions (starchat completion)
        from starchat_cli.cli.completion import enable_shell_classes

        enable_shell_classes()
    if len(sys.argv) == 1 and _is_terminal():
        sys.argv.append("chat")  # a bare `starchat` on a terminal opens the chat; piped, it prints help
    _start_worker_ahead()
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
