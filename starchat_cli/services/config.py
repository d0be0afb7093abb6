"""Settings from the config file, the environment and flags: flags win over env over file.

    settings = resolve_settings(load_config_file(path), {"temperature": 0.0})   # a Settings
    check_setting("ctx", 10)       # ValueError: must be >= 64, not 10

:class:`Settings` is the one declaration of every setting: its type, range (the sampling
ones from ``engine/params.py``), default and help text; the file, the environment, the
CLI's options (cli/options.py) and ``check_setting`` all read it.

The file is TOML (``starchat paths`` shows where)::

    model = "starchat2"          # default model
    temperature = 0.2
    ctx = 4096

    [models.starchat2]           # per-model overrides (any name starchat knows)
    system = "You are StarChat2, an expert programming assistant"
    temperature = 0.1

Environment: ``STARCHAT_MODEL``, ``STARCHAT_TEMPERATURE``, ``STARCHAT_TOP_P``,
``STARCHAT_MAX_TOKENS``, ``STARCHAT_CTX``, ``STARCHAT_THREADS``, ``STARCHAT_GPU``,
``STARCHAT_SYSTEM``, ``STARCHAT_SEED``, ``STARCHAT_FORMAT``, ``STARCHAT_ENDPOINT``,
``STARCHAT_API_KEY``, ``STARCHAT_AMX``, ``STARCHAT_KEEP_ALIVE``, ``STARCHAT_WORKER``. Remote servers can be named::

    [endpoints.gpu-box]
    url = "http://gpu-box:8000/v1"
    api_key = "..."
    model = "starchat2"
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional, Union, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from starchat_cli.core import defaults
from starchat_cli.core.errors import ConfigError
from starchat_cli.engine.params import (
    Draft,
    Invalid,
    MaxTokens,
    Seed,
    Temperature,
    TopP,
    check,
    field_type,
)

# A version check rather than try/except ImportError, so the type checker follows one branch.
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _check_gpu(value: Any) -> str | int:
    if isinstance(value, str) and value.strip().lower() in ("auto", "off"):
        return value.strip().lower()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return "off" if value == 0 else value
    raise ValueError('must be "auto", "off" or a number of layers >= 0')


def _check_cache_size(value: Any) -> float:
    """GB (a number >= 0), or "off"/"on" (the default size)."""
    if isinstance(value, str) and value.strip().lower() in ("off", "no", "false"):
        return 0.0
    if isinstance(value, str) and value.strip().lower() in ("on", "yes", "true"):
        return defaults.PROMPT_CACHE_GB
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError('must be a size in GB (e.g. 4), 0 or "off"') from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError('must be a size in GB (e.g. 4), 0 or "off"')
    return float(value)


def _check_auto_on_off(value: Any) -> str:
    """``draft`` and ``amx``: auto, on or off (a TOML boolean reads as on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.strip().lower() in ("auto", "on", "off"):
        return value.strip().lower()
    raise ValueError('must be "auto", "on" or "off"')


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def _check_duration(value: Any) -> float:
    """``keep_alive``: seconds, or a number with s/m/h (``5m``, ``90s``, ``1h``); 0: none; -1 or
    "forever": no limit (kept as -1.0)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("forever", "-1"):
            return -1.0
        number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "")
        try:
            value = float(number) * _UNITS[unit]
        except ValueError:
            value = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == -1:
            return -1.0
        if value >= 0 and value != float("inf"):
            return float(value)
    raise ValueError('must be a duration such as 5m, 30s, 1h, 0 (unload at once) or "forever"')


def _check_format(value: Any) -> str:
    from starchat_cli.engine.prompting.formats import FORMATS

    if not isinstance(value, str):
        raise ValueError("must be a string")
    if value not in (*FORMATS, "gguf"):
        raise ValueError(f"must be one of {', '.join([*FORMATS, 'gguf'])}")
    return value


Ctx = Annotated[int, Field(ge=64, description="Context window in tokens.")]
Threads = Annotated[int, Field(ge=1, description="CPU threads.")]
Gpu = Annotated[
    Union[str, int],
    BeforeValidator(_check_gpu),
    Field(
        description="GPU offload: auto (as many layers as fit in free GPU memory), off, or a number of layers."
    ),
]
System = Annotated[
    str,
    Field(
        description="System prompt (starcoder2-instruct has no system role: the text is put before the first instruction)."
    ),
]
Format = Annotated[
    str,
    BeforeValidator(_check_format),
    Field(
        description="Force a prompt format: chatml, starchat, starcoder2-instruct, gguf (the file's own template)."
    ),
]
Endpoint = Annotated[
    str,
    Field(
        description="Use an OpenAI-compatible server (URL, or a profile name from the config) instead of a local model."
    ),
]
CacheSize = Annotated[float, BeforeValidator(_check_cache_size)]
DraftMode = Annotated[
    Draft,
    BeforeValidator(lambda value: Draft(_check_auto_on_off(value))),
    Field(
        description="Drafted decoding (copies verified several tokens per step): auto (only where it pays "
        "on this hardware), on, off."
    ),
]
AmxMode = Annotated[str, BeforeValidator(_check_auto_on_off)]
KeepAlive = Annotated[
    float,
    BeforeValidator(_check_duration),
    Field(
        description="How long a local model stays loaded after a call (ask, edit, complete), for the next "
        "one: 5m, 30s, 1h, 0 (unload at once), forever."
    ),
]
WorkerMode = Annotated[
    str, BeforeValidator(lambda value: "on" if _check_auto_on_off(value) != "off" else "off")
]


class Settings(BaseModel):
    """One run's settings; its fields are the config file's keys (their order: the error's list)."""

    model_config = ConfigDict(frozen=True)

    model: Annotated[Optional[str], Field(description="Model name, NAME:QUANT or path to a .gguf file.")] = (
        None
    )
    temperature: Temperature = defaults.TEMPERATURE
    top_p: TopP = defaults.TOP_P
    max_tokens: Optional[MaxTokens] = None  # None: until the reply ends or the context is full
    ctx: Ctx = defaults.CTX
    threads: Optional[Threads] = None  # None: a default from the CPU count
    gpu: Gpu = defaults.GPU  # "auto" (plan from free GPU memory), "off", or a number of layers
    system: Optional[System] = None  # None: the model's default system prompt
    seed: Optional[Seed] = None
    format: Optional[Format] = None  # None: the model's catalog format, else the file's own
    endpoint: Optional[Endpoint] = None  # a URL, or a profile name ([endpoints.NAME])
    api_key: Annotated[Optional[str], Field(description="Bearer key for --endpoint.")] = None
    prompt_cache: CacheSize = defaults.PROMPT_CACHE_GB  # GB of saved prompt states on disk; 0: off
    draft: DraftMode = Draft(defaults.DRAFT)  # drafted decoding: auto, on, off
    amx: AmxMode = "auto"  # Intel AMX kernels: auto (probed once per build + CPU), on, off
    keep_alive: KeepAlive = defaults.KEEP_ALIVE  # seconds; 0: no worker left; -1: forever
    worker: WorkerMode = "on"  # off: ask, edit and complete load the model in their own process


def check_setting(key: str, value: Any) -> Any:
    """``value`` for setting ``key``, checked as the config file, env and flags all check it;
    a ValueError says what is wrong in words that follow the key ("must be >= 64, not 10")."""
    try:
        return check(field_type(Settings, key), value)
    except Invalid as exc:
        raise ValueError(_words(exc)) from None


def _words(exc: Invalid) -> str:
    if exc.reason:
        return exc.reason
    if exc.kind is int:
        return (
            f"must be >= {exc.lo}, not {exc.value}" if exc.number else f"must be a whole number >= {exc.lo}"
        )
    if exc.kind is float:
        if exc.number:
            return f"must be from {exc.lo} to {exc.hi}, not {exc.value}"
        return f"must be a number from {exc.lo} to {exc.hi}"
    return "must be a string"


KEYS = tuple(Settings.model_fields)
ENDPOINT_KEYS = ("url", "api_key", "model")
MODEL_KEYS = ("temperature", "top_p", "max_tokens", "ctx", "system", "format", "gpu")
# Older names still accepted: gpu_layers = gpu (file key, STARCHAT_GPU_LAYERS, --gpu-layers).
ALIASES = {"gpu_layers": "gpu"}
ENV_PREFIX = "STARCHAT_"


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    values: dict[str, Any]
    models: dict[str, dict[str, Any]]
    endpoints: dict[str, dict[str, str]] = field(default_factory=dict)


def load_config_file(path: Path) -> ConfigFile:
    """Read and validate the config file; a missing file is an empty config."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ConfigFile(path, {}, {})
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    values: dict[str, Any] = {}
    models: dict[str, dict[str, Any]] = {}
    endpoints: dict[str, dict[str, str]] = {}
    for key, value in data.items():
        key = ALIASES.get(key, key)
        if key == "endpoints":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: key 'endpoints' must be a table ([endpoints.NAME])")
            for name, table in value.items():
                if not isinstance(table, dict) or "url" not in table:
                    raise ConfigError(f"{path}: key 'endpoints.{name}' must be a table with a url")
                for ekey, evalue in table.items():
                    if ekey not in ENDPOINT_KEYS:
                        raise ConfigError(
                            f"{path}: unknown key 'endpoints.{name}.{ekey}' (endpoint keys: {', '.join(ENDPOINT_KEYS)})"
                        )
                    _validate(path, f"endpoints.{name}.{ekey}", "endpoint", evalue)
                endpoints[name] = dict(table)
            continue
        if key == "models":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: key 'models' must be a table ([models.NAME])")
            for name, table in value.items():
                if not isinstance(table, dict):
                    raise ConfigError(f"{path}: key 'models.{name}' must be a table")
                models[name] = {}
                for mkey, mvalue in table.items():
                    mkey = ALIASES.get(mkey, mkey)
                    where = f"models.{name}.{mkey}"
                    if mkey not in MODEL_KEYS:
                        raise ConfigError(
                            f"{path}: unknown key '{where}' (per-model keys: {', '.join(MODEL_KEYS)})"
                        )
                    models[name][mkey] = _validate(path, where, mkey, mvalue)
            continue
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key '{key}' (known keys: {', '.join(KEYS)}, [models.NAME])")
        values[key] = _validate(path, key, key, value)
    return ConfigFile(path, values, models, endpoints)


def _validate(path: Path | str, where: str, key: str, value: Any) -> Any:
    """``value`` checked as setting ``key``; a ConfigError names ``where`` it was found."""
    try:
        return check_setting(key, value)
    except ValueError as exc:
        raise ConfigError(f"{path}: key '{where}' {exc}") from None


def _validate_flag(key: str, value: Any) -> Any:
    try:
        return check_setting(key, value)
    except ValueError as exc:
        raise ConfigError(f"option --{key.replace('_', '-')} {exc}") from None


def _parse_env_value(key: str, text: str) -> Any:
    """An environment string as the setting's kind of number where it reads as one (else the
    text, which the check then refuses in the same words as a bad config value)."""
    kind = get_args(field_type(Settings, key))[0]
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            return text
    return text


def env_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    names = [(k, k) for k in KEYS] + [(alias, key) for alias, key in ALIASES.items()]
    for name, key in names:
        var = ENV_PREFIX + name.upper()
        if var in environ and environ[var] != "" and key not in out:
            try:
                out[key] = check_setting(key, _parse_env_value(key, environ[var]))
            except ValueError as exc:
                raise ConfigError(f"environment variable {var} {exc}") from None
    return out


def resolve_settings(
    file: ConfigFile,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    default_model: str = "starchat2",
) -> Settings:
    """Merge defaults < file < file's [models.NAME] < environment < flags (None = not given)."""
    env = env_values(environ)
    given = {ALIASES.get(k, k): v for k, v in flags.items() if v is not None}
    for key, value in given.items():
        if key in KEYS:
            given[key] = _validate_flag(key, value)
    model = given.get("model") or env.get("model") or file.values.get("model") or default_model
    merged: dict[str, Any] = {}
    merged.update(file.values)
    merged.update(file.models.get(model, {}))
    merged.update(env)
    merged.update(given)
    merged["model"] = model
    endpoint = merged.get("endpoint")
    if endpoint and "://" not in endpoint:  # a profile name: [endpoints.NAME]
        profile = file.endpoints.get(endpoint)
        if profile is None:
            raise ConfigError(
                f"endpoint {endpoint!r} is neither a URL nor a profile in {file.path} "
                f"(profiles: {', '.join(file.endpoints) or 'none'})"
            )
        merged["endpoint"] = profile["url"]
        if not given.get("api_key") and profile.get("api_key"):
            merged["api_key"] = profile["api_key"]
        if not (given.get("model") or env.get("model")) and profile.get("model"):
            merged["model"] = profile["model"]
    return Settings(**{k: v for k, v in merged.items() if k in KEYS})


def explicit_model(
    file: ConfigFile, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> bool:
    """Whether the user chose a model (flag, env or file) rather than taking the default."""
    environ = os.environ if environ is None else environ
    return bool(flags.get("model") or environ.get(ENV_PREFIX + "MODEL") or file.values.get("model"))
