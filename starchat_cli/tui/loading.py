"""Loading models off the UI thread: the preload at start, and ``/model NAME``.

Both load in a thread worker (under the conversation's engine lock, so never while a
reply is generated) and report with a :class:`~starchat_cli.tui.messages.ModelReady`
posted to the :class:`~.messages.ChatSurface` (the chat view), which routes it back to
:meth:`ModelLoading.ready`::

    models = ModelLoading(view)
    models.switch("starcoder2-3b")  # later: view gets ModelReady -> models.ready(event)
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import Engine

from .messages import ChatSurface, ModelReady


class ModelLoading:
    def __init__(self, surface: ChatSurface) -> None:
        self.surface = surface

    def _in_thread(self, fn: Callable[..., None], *args: object) -> None:
        self.surface.run_worker(
            partial(fn, *args), name=fn.__name__, group="load", exit_on_error=False, thread=True
        )

    def preload(self) -> None:
        """Load the conversation's engine now rather than at the first message."""
        conv = self.surface.conversation
        self.surface.state = "loading model…"
        self._in_thread(self._preload, conv.engine, conv.model_name)

    def switch(self, name: str) -> None:
        """Open and load the model ``name``; the conversation moves to it once it is ready."""
        self.surface.state = f"loading {name}…"
        self.surface.update_status()
        self._in_thread(self._switch, name)

    def _preload(self, engine: Engine, name: str) -> None:
        try:
            info = self.surface.conversation.load(engine)
            self.surface.post_message(ModelReady(name, info.n_ctx, engine))
        except StarchatError as exc:
            self.surface.post_message(ModelReady(name, 0, engine, exc.message))

    def _switch(self, name: str) -> None:
        try:
            resolved, engine, info = self.surface.conversation.open_engine(name)
            self.surface.post_message(ModelReady(resolved, info.n_ctx, engine))
        except StarchatError as exc:
            self.surface.post_message(ModelReady(name, 0, None, exc.message))

    def ready(self, event: ModelReady) -> None:
        surface = self.surface
        surface.state = ""
        if event.error:
            surface.notify(event.error, severity="error", timeout=10)
            surface.update_status()
            return
        if surface.conversation.engine_ready(event.engine, event.name, event.n_ctx):
            surface.notify(f"model: {event.name}")
        for warning in surface.conversation.new_warnings():
            surface.notify(warning, severity="warning", timeout=15)  # e.g. an out-of-memory retry
        surface.update_status()


__all__ = ["ModelLoading"]
