"""``starchat ps`` and ``starchat stop``: the model workers that keep models loaded between calls."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from starchat_cli.engine.worker.registry import WorkerState

PS_HELP = """\
List the models kept loaded between calls: model, memory, context, idle time left, pid.

\b
  starchat ps             one line per worker
  starchat ps --json      the same as JSON

`ask`, `edit` and `complete` leave their model loaded in a worker process for `keep_alive`
(default 5m; `--keep-alive`, STARCHAT_KEEP_ALIVE) so that the next call starts at once.
"""

STOP_HELP = """\
Unload a model kept loaded between calls (its worker exits), or all of them with --all.
"""


def register(app: typer.Typer) -> None:
    app.command("ps", help=PS_HELP)(ps)
    app.command("stop", help=STOP_HELP)(stop)


def _row(state: WorkerState) -> dict[str, Any]:
    from starchat_cli.engine.worker.registry import rss_bytes, status

    now = status(state) or {}
    left = now.get("idle_left")
    return {
        "model": state.name,
        "pid": state.pid,
        "memory_bytes": rss_bytes(state.pid),
        "n_ctx": state.n_ctx,
        "idle_left_seconds": None if left is None else round(max(0.0, left), 1),
        "keep_alive_seconds": now.get("keep_alive", state.keep_alive),
        "answers": bool(now),  # False: it did not answer (busy starting, or hung)
        "busy": bool(now.get("busy")),
        "path": state.path,
        "started": round(state.started, 3),
        "last_used": round(state.last_used, 3),
        "version": state.version,
    }


def _left(row: dict[str, Any]) -> str:
    left = row["idle_left_seconds"]
    if not row["answers"]:
        return "?"
    if row["busy"]:
        return "busy"
    if left is None:
        return "forever"
    minutes, seconds = divmod(int(left), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def ps(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    from starchat_cli.core.units import format_bytes
    from starchat_cli.engine.worker.registry import live_workers

    rows = [_row(state) for state in live_workers()]
    if json_out:
        print(json.dumps({"workers": rows}, indent=2))
        return
    if not rows:
        print("no model is loaded (ask, edit and complete keep theirs loaded for keep_alive)")
        return
    width = max(len("model"), *(len(r["model"]) for r in rows))
    print(f"{'model':<{width}}  {'memory':>9}  {'context':>7}  {'idle left':>9}  pid")
    for r in rows:
        memory = format_bytes(r["memory_bytes"]) if r["memory_bytes"] else "?"
        print(f"{r['model']:<{width}}  {memory:>9}  {r['n_ctx']:>7}  {_left(r):>9}  {r['pid']}")


def stop(
    model: Optional[str] = typer.Argument(
        None,
        help="The model to unload (as `starchat ps` names it, or its file).",
        show_default=False,
        metavar="MODEL",
    ),
    all_: bool = typer.Option(False, "--all", help="Unload every model."),
) -> None:
    from starchat_cli.core.errors import ModelNotFoundError
    from starchat_cli.engine.worker.registry import live_workers, stop_worker

    if (model is None) == (not all_):
        raise typer.BadParameter("name a MODEL or give --all (not both)")
    workers = live_workers()
    chosen = workers if all_ else [w for w in workers if _names(w, model or "")]
    if model is not None and not chosen:
        loaded = ", ".join(w.name for w in workers) or "none"
        raise ModelNotFoundError(f"{model} is not loaded (loaded: {loaded}; `starchat ps` lists them)")
    for state in chosen:
        stop_worker(state)
        print(f"stopped {state.name} (pid {state.pid})")


def _names(state: WorkerState, model: str) -> bool:
    from pathlib import Path

    path = Path(state.path)
    return model in (state.name, state.path, path.name, path.stem)


__all__ = ["ps", "register", "stop"]
