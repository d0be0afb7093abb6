"""Every path starchat reads or writes, in one place.

Defaults follow the platform's conventions (platformdirs). ``STARCHAT_HOME`` moves
everything under one folder (config, data, cache); ``STARCHAT_CONFIG`` points at a
config file elsewhere. Downloads reuse the Hugging Face cache (``HF_HUB_CACHE`` /
``HF_HOME``) rather than keeping a second copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "starchat"


@dataclass(frozen=True)
class Paths:
    home: Path | None  # STARCHAT_HOME when set
    config_file: Path
    data_dir: Path
    cache_dir: Path

    @property
    def models_dir(self) -> Path:
        """Where GGUF files starchat makes (convert, quantize, add --copy) live."""
        return self.data_dir / "models"

    @property
    def registry_file(self) -> Path:
        """The index of known local models (name -> file, family, source)."""
        return self.data_dir / "models.json"

    @property
    def sessions_db(self) -> Path:
        return self.data_dir / "sessions.sqlite3"

    @property
    def prompt_cache_dir(self) -> Path:
        """Saved llama.cpp prompt states (the persistent prompt cache)."""
        return self.cache_dir / "prompt-cache"

    @property
    def runtime_dir(self) -> Path:
        """Sockets and state files of the model workers: ``$XDG_RUNTIME_DIR/starchat``, else the
        cache dir's ``run/`` (``run/`` under ``STARCHAT_HOME`` when it is set)."""
        if self.home is not None:
            return self.home / "run"
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        return Path(xdg) / APP_NAME if xdg else self.cache_dir / "run"

    @property
    def hf_cache(self) -> Path:
        return hf_hub_cache()


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, resolved as huggingface_hub does (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def get_paths() -> Paths:
    """Resolve the paths from the environment (read fresh each call, so tests can change it)."""
    home_env = os.environ.get("STARCHAT_HOME")
    config_env = os.environ.get("STARCHAT_CONFIG")
    if home_env:
        home = Path(home_env).expanduser().resolve()
        config_file = Path(config_env).expanduser() if config_env else home / "config.toml"
        return Paths(home=home, config_file=config_file, data_dir=home, cache_dir=home / "cache")
    import platformdirs

    config_file = (
        Path(config_env).expanduser()
        if config_env
        else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"
    )
    return Paths(
        home=None,
        config_file=config_file,
        data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
    )
