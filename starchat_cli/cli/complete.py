"""``starchat complete``: fill in the middle of a file at a cursor, for shells and editor scripts."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer

from starchat_cli.cli.options import (
    ApiKey,
    Ctx,
    Endpoint,
    Gpu,
    KeepAlive,
    MaxTokens,
    Model,
    Seed,
    Temperature,
    Threads,
    TopP,
)

COMPLETE_HELP = """\
Fill in the middle: the model writes the text at a cursor, given what comes before and after.

The target is FILE:LINE[:COL], 1-based; COL counts characters and defaults to the end of
the line (COL 1 is its start). With no target, stdin is the text before the cursor and
--suffix-file the text after it. Only the middle is printed (no newline added).

\b
  starchat complete app.py:12          # at the end of line 12
  starchat complete app.py:12:5 -f util.py -f models.py
  head -c 400 app.py | starchat complete --suffix-file rest.py
  starchat complete app.py:30 --json   # {"text", "model", "prompt", "stats", ...}

Needs a model with fill-in-the-middle tokens (the StarCoder2 base models, StarChat2,
StarChat-alpha/beta, StarCoder2-Instruct); the demo model has none (exit 6).
"""

TARGET = re.compile(r"^(?P<file>.+?):(?P<line>\d+)(?::(?P<col>\d+))?$")


def register(app: typer.Typer) -> None:
    app.command("complete", help=COMPLETE_HELP, no_args_is_help=False)(complete)


def split_at(text: str, line: int, col: int | None, name: str) -> tuple[str, str]:
    """``text`` split at 1-based ``line``/``col`` (None: the end of the line)."""
    from starchat_cli.core.errors import InputError

    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise InputError(f"{name} has {len(lines)} lines: line {line} is outside it (lines count from 1)")
    length = len(lines[line - 1])
    if col is None:
        col = length + 1
    if not 1 <= col <= length + 1:
        raise InputError(
            f"line {line} of {name} has {length} characters: column {col} is outside it (1 to {length + 1})"
        )
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def _read(path: Path, what: str) -> str:
    """A regular file's text; a named pipe or a device is refused before it is opened (exit 6)."""
    from starchat_cli.chat.inputs import decode_text
    from starchat_cli.edits.textfile import read_regular

    data, _ = read_regular(path, f"{what} {path}")
    return decode_text(data, str(path))


def complete(
    command: typer.Context,
    target: Optional[str] = typer.Argument(
        None,
        help="FILE:LINE[:COL], the cursor (1-based). Omit it to read the prefix from stdin.",
        show_default=False,
    ),
    suffix_file: Optional[Path] = typer.Option(
        None, "--suffix-file", help="With the prefix on stdin: the text after the cursor.", show_default=False
    ),
    files: Optional[List[Path]] = typer.Option(
        None,
        "--file",
        "-f",
        help="Another file as context (repository context; repeatable).",
        show_default=False,
    ),
    model: Model = None,
    temperature: Temperature = None,
    max_tokens: MaxTokens = None,
    top_p: TopP = None,
    seed: Seed = None,
    stop: Optional[List[str]] = typer.Option(
        None, "--stop", help="Stop at this text (repeatable), e.g. --stop $'\\n\\n'.", show_default=False
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: text, model, prompt, stats."),
    ctx: Ctx = None,
    threads: Threads = None,
    gpu: Gpu = None,
    keep_alive: KeepAlive = None,
    endpoint: Endpoint = None,
    api_key: ApiKey = None,
) -> None:
    from starchat_cli.chat.inputs import decode_text
    from starchat_cli.cli.engines import Use, load, open_for
    from starchat_cli.cli.terminal import read_stdin
    from starchat_cli.core.errors import InputError
    from starchat_cli.services.runtime import generation_params

    line = col = None
    path_arg: str | None = None
    if target is not None:
        match = TARGET.match(target)
        if match is None:
            raise typer.BadParameter(f"{target!r} is not FILE:LINE[:COL] (e.g. app.py:12 or app.py:12:5)")
        if suffix_file is not None:
            raise typer.BadParameter("--suffix-file goes with a prefix on stdin, not with FILE:LINE")
        path_arg, line = match["file"], int(match["line"])
        col = int(match["col"]) if match["col"] else None
        text = _read(Path(path_arg), "file")
        prefix, suffix = split_at(text, line, col, path_arg)
    else:
        piped = read_stdin()
        if not piped:
            raise InputError(
                "nothing to complete: give FILE:LINE[:COL], or pipe the text before the cursor "
                "(with --suffix-file for the text after it)"
            )
        prefix = decode_text(piped, "stdin")
        suffix = _read(suffix_file, "--suffix-file") if suffix_file is not None else ""
    extra = [(str(p), _read(p, "--file")) for p in files or ()]

    settings, engine = open_for(command, Use.COMPLETE)
    info = load(engine)
    params = generation_params(settings)
    if stop:
        params = params.model_copy(update={"stop": tuple(stop)})
    gen = engine.infill(prefix, suffix, params, extra=extra, path=path_arg)
    out = sys.stdout
    try:
        for chunk in gen:
            if not json_out:
                out.write(chunk)
                out.flush()
    finally:
        gen.close()
    if json_out:
        payload = {
            "text": gen.text,
            "model": info.name,
            "path": path_arg,
            "line": line,
            "column": col if col is not None else (len(prefix) - prefix.rfind("\n") if target else None),
            "prompt": gen.prompt_text,
            "stats": gen.stats.as_dict(),
        }
        out.write(json.dumps(payload, ensure_ascii=False) + "\n")
    out.flush()


__all__ = ["complete", "register", "split_at"]
