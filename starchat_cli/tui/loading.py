"""Loading models off the UI thread: the preload at start, and ``/model NAME``.

Both load in a thread worker (under the conversation's engine lock, so never while a
reply is generated) and report with a :class:`~starchat_cli.tui.messages.ModelReady`;
the app routes it back to :meth:`ModelLoading.ready`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from starchat_cli.core.errors import StarchatError
from starchat_cli.engine.contract import Engine

from .messages import ModelReady

if TYPE_CHECKING:
    from .app import ChatApp


class ModelLoading:
    def __init__(self, app: ChatApp) -> None:
        self.app = app

    def _in_thread(self, fn: Callable[..., None], *args: object) -> None:
        self.app.run_worker(
            partial(fn, *args), name=fn.__name__, group="load", exit_on_error=False, thread=True
        )

    def preload(self) -> None:
        """Load the conversation's engine now rather than at the first message."""
        conv = self.app.conversation
        self.app.state = "loading model…"
        self._in_thread(self._preload, conv.engine, conv.model_name)

    def switch(self, name: str) -> None:
        """Open and load the model ``name``; the conversation moves to it once it is ready."""
        self.app.state = f"loading {name}…"
        self.app.update_status()
        self._in_thread(self._switch, name)

    def _preload(self, engine: Engine, name: str) -> None:
        try:
            info = self.app.conversation.load(engine)
            self.app.post_message(ModelReady(name, info.n_ctx, engine))
        except StarchatError as exc:
            self.app.post_message(ModelReady(name, 0, engine, exc.message))

    def _switch(self, name: str) -> None:
        try:
            resolved, engine, info = self.app.conversation.open_engine(name)
            self.app.post_message(ModelReady(resolved, info.n_ctx, engine))
        except StarchatError as exc:
            self.app.post_message(ModelReady(name, 0, None, exc.message))

    def ready(self, event: ModelReady) -> None:
        app = self.app
        app.state = ""
        if event.error:
            app.notify(event.error, severity="error", timeout=10)
            app.update_status()
            return
        if app.conversation.engine_ready(event.engine, event.name, event.n_ctx):
            app.notify(f"model: {event.name}")
        for warning in (event.engine or app.conversation.engine).info.warnings:
            app.notify(warning, severity="warning", timeout=15)  # e.g. an out-of-memory retry
        app.update_status()


__all__ = ["ModelLoading"]
