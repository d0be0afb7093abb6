"""The ``starchat`` command's entry point (also ``python -m starchat_cli``).

    python -m starchat_cli ask "write a python function that reverses a string"

Nothing is imported here before :func:`main` runs: a Ctrl-C while the CLI's own modules
load (typer alone takes a tenth of a second) then ends as every other Ctrl-C does, with
exit 130 and one line on stderr instead of a traceback. :func:`main` also makes sure no
Ctrl-C is dropped inside a ctypes callback (see ``cli/signals.py``).
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # ExitCode.INTERRUPTED, not imported: the import itself may be interrupted


def main() -> None:
    try:
        from starchat_cli.cli.signals import keep_interrupts

        keep_interrupts()
        from starchat_cli.cli.app import main as run

        run()
    except KeyboardInterrupt:
        print("\nstarchat: error: interrupted", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        # CPython remembers a KeyboardInterrupt raised inside exec() or eval() of a string
        # (namedtuple and dataclass build their classes so, at import) even when it was
        # caught, and under `python -m` then ends the process by SIGINT instead of with the
        # exit code given; evaluating a string again clears that mark.
        eval("None")


if __name__ == "__main__":
    main()
