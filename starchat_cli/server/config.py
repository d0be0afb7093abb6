"""The server's settings: one typed ``ServerConfig``, built by ``starchat serve`` (cli/serve.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from starchat_cli.core import defaults
from starchat_cli.engine.params import Draft

from .names import ModelNames


@dataclass
class ServerConfig:
    model_name: str
    aliases: tuple[str, ...] = ()  # other names a request may use for the model
    api_key: str | None = None
    max_body_bytes: int = defaults.SERVE_MAX_BODY
    max_tokens_limit: int = defaults.SERVE_MAX_TOKENS
    default_max_tokens: int | None = None
    default_temperature: float = defaults.TEMPERATURE
    default_top_p: float = defaults.TOP_P
    default_seed: int | None = None  # the `seed` setting: requests that send none sample with it
    draft: Draft = Draft(defaults.DRAFT)  # drafted decoding for every request (serve --draft)
    created: int = field(default_factory=lambda: int(time.time()))
    # The web-page defences (guard.py): the bind address decides the default Host names.
    bind_host: str = defaults.SERVE_HOST
    allow_hosts: tuple[str, ...] = ()  # --allow-host: more Host names ("*" any)
    allow_origins: tuple[str, ...] = ()  # --allow-origin: more Origins or patterns ("*" any)
    strict_model: bool = False  # --strict-model: a request naming another model is a 404
    notify: Callable[[str], None] | None = None  # a line for the operator (stderr), e.g. an unknown name
    names: ModelNames = field(init=False, repr=False, compare=False)  # which model a request means

    def __post_init__(self) -> None:
        self.names = ModelNames(self.model_name, self.aliases, strict=self.strict_model, notify=self.notify)

    @property
    def served_names(self) -> set[str]:
        """Every name a request's ``model`` may give: the model's own and its aliases."""
        return {self.model_name, *self.aliases}


__all__ = ["ServerConfig"]
