"""``starchat pull``: models from the Hugging Face Hub, prebuilt or built here."""

from __future__ import annotations

from typing import Optional

import typer

PULL_HELP = """\
Download a model from the Hugging Face Hub into its cache and register it.

\b
  starchat pull starchat2                    # the catalog's prebuilt GGUF (Q4_K_M)
  starchat pull starchat2 --quant Q8_0
  starchat pull starchat2 --from-source      # original checkpoint -> convert -> quantize
  starchat pull bartowski/starchat2-15b-v0.1-GGUF:Q5_K_M
  starchat pull hf.co/ORG/REPO:FILE.gguf

Interrupted downloads resume where they stopped; every file is checked against the
Hub's sha256 before it is used. HF_TOKEN (or `hf auth login`) opens gated and private
repos; HF_HOME moves the cache; HF_HUB_OFFLINE=1 uses only what is cached.
"""


def register(app: typer.Typer) -> None:
    app.command("pull", help=PULL_HELP)(pull)


def pull(
    model: str = typer.Argument(
        ..., help="A catalog name, ORG/REPO[:QUANT], or hf.co/ORG/REPO[:QUANT|:FILE]."
    ),
    quant: Optional[str] = typer.Option(
        None, "--quant", "-q", help="Quantization, e.g. Q4_K_M (default), Q5_K_M, Q8_0.", show_default=False
    ),
    from_source: bool = typer.Option(
        False, "--from-source", help="Download the original checkpoint and convert + quantize it here."
    ),
    keep_f16: bool = typer.Option(
        False, "--keep-f16", help="With --from-source: keep the intermediate F16 GGUF."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the files and sizes, download nothing."),
    revision: str = typer.Option("main", "--revision", help="Branch, tag or commit on the Hub."),
) -> None:
    from starchat_cli.cli.signals import terminate_like_ctrl_c

    terminate_like_ctrl_c()
    from starchat_cli.cli.progress import Progress
    from starchat_cli.cli.terminal import note
    from starchat_cli.core.errors import ExitCode, StarchatError
    from starchat_cli.core.units import format_bytes
    from starchat_cli.services.pull import dry_run_lines, execute, make_plan, parse_target

    target = parse_target(model, quant, from_source)
    target.revision = revision
    if not dry_run:
        from starchat_cli.core.fsutil import ensure_folder
        from starchat_cli.models.hub import hf_hub_cache

        ensure_folder(hf_hub_cache())  # a cache that cannot be created fails first, by name (exit 12)
    plan = make_plan(target)
    for line in plan.notes:
        note(line)
    if dry_run:
        print("\n".join(dry_run_lines(plan)))
        return
    try:
        with Progress(lines=True) as bars:
            if plan.to_fetch:
                bars.say(
                    f"downloading {format_bytes(plan.to_fetch, 'GB', 2)} from {target.repo} ({len(plan.files)} files)"
                )
            entry = execute(
                plan,
                on_file=bars.update,
                on_stage=bars.say,
                keep_f16=keep_f16,
                convert_progress=bars.callback("converting"),
                quantize_progress=bars.callback("quantizing", "tensors"),
            )
    except KeyboardInterrupt as exc:
        from starchat_cli.cli.signals import Terminated

        how = ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED
        raise StarchatError(
            f"{'terminated' if how == ExitCode.TERMINATED else 'interrupted'}: run the same command again "
            "to resume the download",
            exit_code=how,
        ) from None
    origin = "from the cache (offline)" if plan.offline else f"from {target.repo}"
    print(f"pulled {entry.name} ({entry.quant}, {entry.source}) {origin}: {entry.path}")
    print(f'run it: starchat ask -m {entry.name} "..."')
