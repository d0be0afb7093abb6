"""Which model a request's ``model`` field means: ``serve`` has one, and answers with it.

    names = ModelNames("starchat2", ("starchat",), strict=False, notify=print)   # ServerConfig.names
    names.resolve("gpt-4o-mini")                # -> "starchat2": the served model, noted once
    names.resolve("gpt-4o-mini", ollama=True)   # -> "starchat2:latest", Ollama's spelling
    ModelNames("starchat2", strict=True).resolve("x")   # serve --strict-model: APIError 404

A client names the model it was configured with (aider's ``openai/gpt-4o-mini``, the openai
library's examples, an Ollama client's ``llama3``); ``starchat serve`` runs one model per process,
so, as llama-server does, any name gets the served model, and the reply's ``model`` says which
one answered. The server says it on stderr once per distinct name (``notify``), not per
request. ``--strict-model`` restores the 404 for a name that is not the model's own or an alias:
OpenAI's ``model_not_found`` on ``/v1``, Ollama's ``model 'x' not found`` on ``/api``.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from .errors import APIError, OllamaError


def ollama_name(model_name: str) -> str:
    """The served model's Ollama name (``NAME:TAG``): its own tag, else ``latest``."""
    return model_name if ":" in model_name else f"{model_name}:latest"


class ModelNames:
    """The served model's names, and the unknown names already noted (thread-safe)."""

    def __init__(
        self,
        model_name: str,
        aliases: Iterable[str] = (),
        *,
        strict: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.model_name = model_name
        self.served = {model_name.lower(), *(a.lower() for a in aliases)}
        self.strict, self.notify = strict, notify
        self._noted: set[str] = set()
        self._lock = threading.Lock()

    def is_served(self, name: str, tags: tuple[str, ...] = ()) -> bool:
        """``name`` is the model's own name or an alias, or one with a ``:tag`` from ``tags`` (Ollama's
        ``latest`` and the served quantization). Case-insensitive, as Ollama's names are."""
        names = self.served
        base, sep, tag = name.lower().partition(":")
        if name.lower() in names:
            return True
        return bool(sep) and base in names and tag in {t.lower() for t in tags if t}

    def resolve(self, name: str | None, *, quant: str = "", ollama: bool = False) -> str:
        """The name the reply reports: ``name`` itself when it is served, else the served model's
        (noted once per distinct name); a 404 instead when the server is strict."""
        if name is None or name == "" or self.is_served(name, ("latest", quant) if ollama else ()):
            return name or (ollama_name(self.model_name) if ollama else self.model_name)
        if self.strict:
            if ollama:
                raise OllamaError(404, f"model '{name}' not found")
            raise APIError(
                404,
                f"model {name!r} is not served here; this server has {self.model_name!r}",
                code="model_not_found",
                param="model",
            )
        self._note(name)
        return ollama_name(self.model_name) if ollama else self.model_name

    def _note(self, name: str) -> None:
        with self._lock:
            if name in self._noted:
                return
            self._noted.add(name)
        if self.notify is not None:
            self.notify(
                f"a request named model {name!r}: answering with {self.model_name!r} "
                "(the one model served; --strict-model refuses other names)"
            )


__all__ = ["ModelNames", "ollama_name"]
