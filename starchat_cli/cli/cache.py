"""``starchat cache``: the persistent prompt cache (saved llama.cpp prompt states)."""

from __future__ import annotations

import json
import time
from typing import Optional

import typer

CACHE_HELP = """\
The prompt cache: llama.cpp's state after each long prompt, kept on disk so that the same
prefix (a piped file, a resumed chat, a system prompt) is never evaluated twice, across runs.

\b
  starchat cache list [--json]      model, tokens, size and last use of each saved state
  starchat cache clear [MODEL]      delete them all (or one model's) and say how much was freed

Its size is capped by `prompt_cache` in the config (GB; default 4, 0 turns it off;
STARCHAT_PROMPT_CACHE=off too); the least recently used states go first.
"""


def register(app: typer.Typer) -> None:
    cache = typer.Typer(help=CACHE_HELP, no_args_is_help=True, add_completion=False)
    cache.command("list", help="List the saved prompt states, most recently used first.")(cache_list)
    cache.command("clear", help="Delete saved prompt states (all, or one model's).")(cache_clear)
    app.add_typer(cache, name="cache")


def _cache():
    from starchat_cli.services.runtime import load_settings, prompt_cache

    settings, _ = load_settings({})
    return prompt_cache(settings)


def _say_notes(cache) -> None:
    """What the cache found damaged and removed on the way (on stderr, stdout stays the listing)."""
    from starchat_cli.cli.terminal import note

    for line in cache.notes:
        note(line)


def cache_list(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    from starchat_cli.core.units import format_bytes

    cache = _cache()
    entries = cache.entries()
    _say_notes(cache)
    rows = [
        {
            "model": e.model,
            "tokens": e.n_tokens,
            "size_bytes": e.size,
            "last_used": round(e.last_used, 3),
            "created": round(e.created, 3),
            "file": str(e.state_path),
        }
        for e in entries
    ]
    if json_out:
        print(
            json.dumps({"folder": str(cache.folder), "cap_bytes": cache.cap_bytes, "entries": rows}, indent=2)
        )
        return
    total = sum(e.size for e in entries)
    cap = format_bytes(cache.cap_bytes) if cache.enabled else "off"
    if not rows:
        print(f"no saved prompt states in {cache.folder} (cap {cap})")
        return
    width = max(len("model"), *(len(r["model"]) for r in rows))
    print(f"{'model':<{width}}  {'tokens':>7}  {'size':>9}  last used")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_used"]))
        print(f"{r['model']:<{width}}  {r['tokens']:>7,}  {format_bytes(r['size_bytes']):>9}  {when}")
    print(f"{len(rows)} saved state(s), {format_bytes(total)} of {cap} in {cache.folder}")


def cache_clear(
    model: Optional[str] = typer.Argument(None, help="Only this model's states (as `cache list` names it)."),
) -> None:
    from starchat_cli.core.units import format_bytes

    cache = _cache()
    removed = cache.clear(model)
    _say_notes(cache)
    which = f" of {model}" if model else ""
    print(f"removed {removed.count} saved prompt state(s){which}: {format_bytes(removed.bytes)} freed")
