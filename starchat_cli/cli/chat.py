"""``starchat chat`` (the Textual TUI) and ``starchat sessions list|show|search|rm|export``.

textual and the engine are imported inside the commands, so ``starchat --help`` stays light.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from starchat_cli.cli.limits import number
from starchat_cli.cli.options import (
    ApiKey,
    Ctx,
    Draft,
    Endpoint,
    Format,
    Gpu,
    MaxTokens,
    Model,
    System,
    Temperature,
    Threads,
)

CHAT_HELP = """\
Open the full-screen chat: multi-turn sessions, streamed Markdown replies, code blocks
you can copy, save or insert into files (diff preview, confirm, undo).

\b
  starchat chat                      a new session with the default model
  starchat chat -m demo --system "Answer in one paragraph."
  starchat chat --session 3f2a       resume a saved session (an id prefix is enough)

Keys: Enter sends, Ctrl+J adds a line, Esc stops a reply, Ctrl+O sessions, F1 help.
"""

SESSIONS_HELP = """\
Saved chat sessions (SQLite, under the data dir: `starchat paths`).

\b
  starchat sessions list
  starchat sessions search "quicksort rust"
  starchat sessions show 3f2a
  starchat sessions export 3f2a -o chat.md
  starchat sessions rm 3f2a
"""


def register(app: typer.Typer) -> None:
    app.command("chat", help=CHAT_HELP, no_args_is_help=False)(chat)
    sessions = typer.Typer(help=SESSIONS_HELP, no_args_is_help=True, rich_markup_mode=None)
    sessions.command("list", help="List sessions, most recent first.")(sessions_list)
    sessions.command("show", help="Print a session as Markdown.")(sessions_show)
    sessions.command("search", help="Full-text search over every message.")(sessions_search)
    sessions.command("rm", help="Delete sessions.")(sessions_rm)
    sessions.command("export", help="Export a session to a Markdown file.")(sessions_export)
    app.add_typer(sessions, name="sessions")


def chat(
    command: typer.Context,
    model: Model = None,
    session: Optional[str] = typer.Option(
        None,
        "--session",
        "-S",
        help="Resume a saved session (its id, or a unique prefix).",
        show_default=False,
    ),
    new: bool = typer.Option(False, "--new", help="Start a new session (the default)."),
    system: System = None,
    temperature: Temperature = None,
    max_tokens: MaxTokens = None,
    ctx: Ctx = None,
    threads: Threads = None,
    gpu: Gpu = None,
    draft: Draft = None,
    prompt_format: Format = None,
    endpoint: Endpoint = None,
    api_key: ApiKey = None,
) -> None:
    from starchat_cli.chat.sessions import SessionStore
    from starchat_cli.cli.engines import Use, open_with, settings_for
    from starchat_cli.core.errors import InputError
    from starchat_cli.services.runtime import generation_params

    if session and new:
        raise typer.BadParameter("--session and --new do not go together")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InputError('starchat chat needs a terminal; for pipes and scripts use starchat ask "..."')
    store = SessionStore()
    resumed = store.get(session) if session else None
    saved = resumed.model if resumed is not None and resumed.model else None
    settings, explicit = settings_for(command, model=model or saved)
    engine = open_with(settings, explicit or resumed is not None, Use.CHAT)
    model_name = engine.info.name or engine.load().name  # a remote server without -m: its first model

    def factory(name: str):
        other = open_with(settings_for(command, model=name)[0], True, Use.CHAT)
        return other.info.name or other.load().name, other

    from starchat_cli.tui.app import make_app

    params = generation_params(settings)
    app = make_app(
        engine,
        model_name=model_name,
        store=store,
        session_id=resumed.id if resumed is not None else None,
        system=settings.system,
        params=params,
        engine_factory=factory,
    )
    try:
        app.run()
    finally:
        store.close()


# -- sessions ---------------------------------------------------------------------------------


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def sessions_list(
    limit: Optional[int] = typer.Option(
        None, "--limit", "-l", help="Show at most N sessions.", show_default=False, callback=number("limit")
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    from starchat_cli.chat.sessions import SessionStore

    with SessionStore() as store:
        rows = store.list(limit)
    if json_out:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    if not rows:
        print("no saved sessions yet: start one with `starchat chat`", file=sys.stderr)
        return
    for s in rows:
        print(
            f"{s.id}  {_when(s.updated)}  {s.message_count:>4} msgs  {s.model:<18}  {s.title or '(untitled)'}"
        )


def sessions_show(session_id: str = typer.Argument(..., help="Session id or unique prefix.")) -> None:
    from starchat_cli.chat.sessions import SessionStore

    with SessionStore() as store:
        sys.stdout.write(store.to_markdown(session_id))


def sessions_search(
    query: List[str] = typer.Argument(..., help="Words to find (all must match; the last one as a prefix)."),
    limit: int = typer.Option(20, "--limit", "-l", help="Show at most N matches.", callback=number("limit")),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    from starchat_cli.chat.sessions import SessionStore

    with SessionStore() as store:
        hits = store.search(" ".join(query), limit=limit)
    if json_out:
        print(json.dumps([h.__dict__ for h in hits], indent=2))
        return
    if not hits:
        print("no matches", file=sys.stderr)
        raise typer.Exit(1)
    for h in hits:
        snippet = " ".join(h.snippet.split())
        print(f"{h.session_id}  {h.title or '(untitled)'}\n    {h.role}: {snippet}")


def sessions_rm(
    session_ids: List[str] = typer.Argument(..., help="Session ids or unique prefixes."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting."),
) -> None:
    from starchat_cli.chat.sessions import SessionStore
    from starchat_cli.core.errors import StarchatError

    with SessionStore() as store:
        found = [store.get(sid) for sid in session_ids]  # all or nothing: check every id first
        if not yes:
            names = ", ".join(f"{s.id} ({s.title or 'untitled'})" for s in found)
            if not (sys.stdin and sys.stdin.isatty()):
                raise StarchatError(f"`starchat sessions rm` deletes {names} for good: add --yes to confirm")
            if not typer.confirm(f"delete {names}?", default=False):
                raise typer.Exit(1)
        for s in found:
            store.delete(s.id)
            print(f"deleted {s.id}  {s.title or '(untitled)'}")


def sessions_export(
    session_id: str = typer.Argument(..., help="Session id or unique prefix."),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="File to write (- for stdout). [default: starchat-ID.md]",
        show_default=False,
    ),
) -> None:
    from starchat_cli.chat.sessions import SessionStore

    with SessionStore() as store:
        s = store.get(session_id)
        if output is not None and str(output) == "-":
            sys.stdout.write(store.to_markdown(s.id))
            return
        target = store.export_markdown(s.id, output or Path(f"starchat-{s.id}.md"))
    print(f"exported {s.id} to {target}", file=sys.stderr)


__all__ = ["chat", "register"]
