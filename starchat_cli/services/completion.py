"""The engine for fill-in-the-middle (``starchat complete``): a model trained for completion.

With no model chosen: a downloaded completion model (the StarCoder2 base models, when the
catalog has them), else the configured/default model, else any downloaded StarChat model
(they all carry FIM tokens); the demo model has none, so it is never a fallback here.
"""

from __future__ import annotations

from typing import Callable

from starchat_cli.core.errors import ModelNotFoundError
from starchat_cli.engine.contract import Engine
from starchat_cli.models.catalog import COMPLETION_MODELS, DEFAULT_MODEL, STARCHAT_FAMILY
from starchat_cli.models.store import ResolvedModel, Store
from starchat_cli.services.config import Settings
from starchat_cli.services.runtime import Opened, engine_for, open_engine, warm_engine_for


def open_completion_engine(
    settings: Settings,
    explicit: bool,
    store: Store | None = None,
    *,
    worker: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Opened:
    """The engine ``complete`` uses (an endpoint or an explicit model as given); ``worker``: a
    local model in its worker process (services/runtime.py's ``warm_engine_for``, ``notify``)."""
    if settings.endpoint or explicit:
        return open_engine(settings, explicit, worker=worker, notify=notify)

    def make(model: ResolvedModel, settings: Settings) -> Engine:
        return warm_engine_for(model, settings, notify) if worker else engine_for(model, settings)

    store = store or Store()
    for name in COMPLETION_MODELS:  # the catalog's completion-first models, smallest first
        entry = store.available(name)
        if entry is not None:
            return Opened(make(store.resolve(entry.name), settings))
    name = settings.model or DEFAULT_MODEL
    try:
        return Opened(make(store.resolve(name), settings))
    except ModelNotFoundError:
        pass
    for family in STARCHAT_FAMILY:
        entry = store.available(family)
        if entry is not None and family not in COMPLETION_MODELS:
            note = f"using {entry.name} for completion: no completion model is downloaded"
            return Opened(make(store.resolve(entry.name), settings), note)
    pull = next(iter(COMPLETION_MODELS), name)
    raise ModelNotFoundError(
        f"no model for fill-in-the-middle: run `starchat pull {pull}` or pass -m MODEL "
        "(the demo model has no FIM tokens)"
    )


__all__ = ["open_completion_engine"]
