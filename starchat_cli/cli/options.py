"""Options several commands share (ask, chat, serve), declared once.

Each is an ``Annotated`` type: ``def ask(model: Model = None, ...)``. Defaults are
``None`` so that "not given" can fall through to the environment and the config file.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional

import typer

from starchat_cli.core import defaults

# Numeric options that are not settings (settings -- ctx, threads, temperature, top_p,
# max_tokens, seed -- are checked by services/config.py CHECKS, the same rule as in the
# config file): (smallest, largest) allowed, None = no bound.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "port": (1, 65535),
    "max_tokens_limit": (1, None),
    "max_body": (1, None),
    "limit": (1, None),
    "quantize_threads": (0, None),  # 0 = every core
    "doctor_ctx": (64, None),
}


def number(key: str) -> Callable[[Any, Any], Any]:
    """A parse-time check for a numeric option: out of range is a ConfigError (exit 3).

    ``key`` is a settings key (checked by ``services.config``) or a name in :data:`LIMITS`.
    """

    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is None:
            return value
        flag = max(param.opts, key=len) if param.opts else f"--{key}"
        if key in LIMITS:
            from starchat_cli.core.errors import ConfigError

            lo, hi = LIMITS[key]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                if hi is None:
                    raise ConfigError(f"option {flag} must be >= {lo}, not {value}")
                raise ConfigError(f"option {flag} must be from {lo} to {hi}, not {value}")
            return value
        from starchat_cli.core.errors import ConfigError
        from starchat_cli.services.config import CHECKS

        try:
            return CHECKS[key](value)
        except ValueError as exc:
            raise ConfigError(f"option {flag} {exc}") from None

    return check


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
        callback=number("temperature"),
        help=f"Sampling temperature; 0 = greedy. [default: {defaults.TEMPERATURE}]",
        show_default=False,
    ),
]
MaxTokens = Annotated[
    Optional[int],
    typer.Option(
        "--max-tokens",
        "-n",
        callback=number("max_tokens"),
        help="Stop after this many tokens. [default: until the reply ends]",
        show_default=False,
    ),
]
Ctx = Annotated[
    Optional[int],
    typer.Option(
        "--ctx",
        "-c",
        help=f"Context window in tokens. [default: {defaults.CTX}]",
        show_default=False,
        callback=number("ctx"),
    ),
]
Threads = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        help="CPU threads. [default: usable cores]",
        show_default=False,
        callback=number("threads"),
    ),
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
        "--top-p",
        help=f"Nucleus sampling cut-off. [default: {defaults.TOP_P}]",
        show_default=False,
        callback=number("top_p"),
    ),
]
Seed = Annotated[
    Optional[int],
    typer.Option(
        "--seed", help="Random seed, for repeatable sampling.", show_default=False, callback=number("seed")
    ),
]
