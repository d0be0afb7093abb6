"""The setting options several commands share (ask, chat, edit, complete, serve), made from the settings model.

    def ask(command: typer.Context, model: Model = None, temperature: Temperature = None, ...):
        settings, explicit = load_settings(setting_flags(command))

Each option's help text, default shown and range check come from its field in
``services.config.Settings`` (and so from ``engine.params`` for the sampling ones); a
number out of range is a ConfigError naming the option (exit 3), in the config file's
words. Defaults are ``None`` so that "not given" falls through to the environment and the
config file. :func:`setting_flags` collects what was given, keyed by setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional, get_args

import typer

from starchat_cli.engine.params import description, field_type
from starchat_cli.services.config import Settings, check_setting

_FLAGS = "starchat.setting_flags"  # ctx.meta key: setting -> value given (None: not given)


def _recorder(key: str) -> Callable[..., Any]:
    numeric = get_args(field_type(Settings, key))[0] in (int, float)

    def record(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is not None and numeric:
            try:
                value = check_setting(key, value)
            except ValueError as exc:
                from starchat_cli.core.errors import ConfigError

                flag = max(param.opts, key=len) if param.opts else f"--{key}"
                raise ConfigError(f"option {flag} {exc}") from None
        ctx.meta.setdefault(_FLAGS, {})[key] = value
        return value

    return record


def setting(
    key: str, *flags: str, help: str | None = None, env: bool = False, default: str | None = None
) -> Any:
    """A Typer option for setting ``key``: help from the field's description, then ``[env: ...;
    default: ...]`` (the field's default unless ``default`` says it in words); ``help`` replaces it all."""
    if help is None:
        shown = default if default is not None else Settings.model_fields[key].default
        notes = ([f"env: STARCHAT_{key.upper()}"] if env else []) + (
            [f"default: {shown}"] if shown is not None else []
        )
        help = description(field_type(Settings, key)) + (f" [{'; '.join(notes)}]" if notes else "")
    return typer.Option(*flags, help=help, show_default=False, callback=_recorder(key))


def setting_flags(command: typer.Context, **override: Any) -> dict[str, Any]:
    """The setting options ``command`` (the running command) was given (None: not given), with ``override``."""
    return {**command.meta.get(_FLAGS, {}), **override}


Model = Annotated[Optional[str], setting("model", "--model", "-m", env=True, default="starchat2")]
System = Annotated[Optional[str], setting("system", "--system", "-s")]
Temperature = Annotated[Optional[float], setting("temperature", "--temperature", "-t")]
MaxTokens = Annotated[
    Optional[int], setting("max_tokens", "--max-tokens", "-n", default="until the reply ends")
]
Ctx = Annotated[Optional[int], setting("ctx", "--ctx", "-c")]
Threads = Annotated[Optional[int], setting("threads", "--threads", default="usable cores")]
Gpu = Annotated[Optional[str], setting("gpu", "--gpu", "--gpu-layers")]
Format = Annotated[Optional[str], setting("format", "--format")]
Endpoint = Annotated[Optional[str], setting("endpoint", "--endpoint", "-e", env=True)]
ApiKey = Annotated[Optional[str], setting("api_key", "--api-key", env=True)]
Draft = Annotated[Optional[str], setting("draft", "--draft", env=True)]
TopP = Annotated[Optional[float], setting("top_p", "--top-p")]
Seed = Annotated[Optional[int], setting("seed", "--seed")]
KeepAlive = Annotated[Optional[str], setting("keep_alive", "--keep-alive", env=True, default="5m")]
