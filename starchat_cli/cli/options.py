"""Options several commands share (ask, chat, serve), declared once.

Each is an ``Annotated`` type: ``def ask(model: Model = None, ...)``. Defaults are
``None`` so that "not given" can fall through to the environment and the config file.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from starchat_cli.core import defaults

Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model name, NAME:QUANT or path to a .gguf file. [env: STARCHAT_MODEL; default: starchat2]",
        show_default=False,
    ),
]
System = Annotated[
    Optional[str],
    typer.Option(
        "--system",
        "-s",
        help="System prompt (starcoder2-instruct has no system role: the text is put before the first instruction).",
        show_default=False,
    ),
]
Temperature = Annotated[
    Optional[float],
    typer.Option(
        "--temperature",
        "-t",
        help=f"Sampling temperature; 0 = greedy. [default: {defaults.TEMPERATURE}]",
        show_default=False,
    ),
]
MaxTokens = Annotated[
    Optional[int],
    typer.Option(
        "--max-tokens",
        "-n",
        help="Stop after this many tokens. [default: until the reply ends]",
        show_default=False,
    ),
]
Ctx = Annotated[
    Optional[int],
    typer.Option(
        "--ctx", "-c", help=f"Context window in tokens. [default: {defaults.CTX}]", show_default=False
    ),
]
Threads = Annotated[
    Optional[int], typer.Option("--threads", help="CPU threads. [default: usable cores]", show_default=False)
]
Gpu = Annotated[
    Optional[str],
    typer.Option(
        "--gpu",
        "--gpu-layers",
        help="GPU offload: auto (as many layers as fit in free GPU memory), off, or a number of layers. "
        f"[default: {defaults.GPU}]",
        show_default=False,
    ),
]
Format = Annotated[
    Optional[str],
    typer.Option(
        "--format",
        help="Force a prompt format: chatml, starchat, starcoder2-instruct, gguf (the file's own template).",
        show_default=False,
    ),
]
Endpoint = Annotated[
    Optional[str],
    typer.Option(
        "--endpoint",
        "-e",
        help="Use an OpenAI-compatible server (URL, or a profile name from the config) instead of a local model. [env: STARCHAT_ENDPOINT]",
        show_default=False,
    ),
]
ApiKey = Annotated[
    Optional[str],
    typer.Option("--api-key", help="Bearer key for --endpoint. [env: STARCHAT_API_KEY]", show_default=False),
]
Draft = Annotated[
    Optional[str],
    typer.Option(
        "--draft",
        help="Drafted decoding (copies verified several tokens per step): auto (only where it pays "
        f"on this hardware), on, off. [env: STARCHAT_DRAFT; default: {defaults.DRAFT}]",
        show_default=False,
    ),
]
TopP = Annotated[
    Optional[float],
    typer.Option(
        "--top-p", help=f"Nucleus sampling cut-off. [default: {defaults.TOP_P}]", show_default=False
    ),
]
Seed = Annotated[
    Optional[int],
    typer.Option("--seed", help="Random seed, for repeatable sampling.", show_default=False),
]
