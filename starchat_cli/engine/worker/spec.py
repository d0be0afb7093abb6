"""What a worker runs: one model file and its load-time settings, and the key that names it.

    spec = EngineSpec(path="/m/demo.gguf", name="demo", n_ctx=4096, format_name="chatml")
    spec.key()                     # "3f9c0a..." (16 hex): same file + settings + version, same worker
    EngineSpec.from_json(spec.to_json()) == spec

Plain data (no llama.cpp): the client and the worker both read it; local.py builds the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from starchat_cli import __version__
from starchat_cli.core import defaults

PROTOCOL = 2  # the frames' version (protocol.py); part of the key, checked at hello


@dataclass(frozen=True)
class EngineSpec:
    path: str  # the GGUF file, absolute
    name: str = ""  # the model as the user knows it
    n_ctx: int = defaults.CTX
    n_threads: int | None = None
    gpu: str | int = defaults.GPU
    amx: str = "auto"
    flash_attn: bool = True  # tried first; off when the backend cannot make such a context (or after a crash)
    format_name: str | None = None  # the prompt format to use; None: the file's own template
    forced_format: str | None = None  # --format when format_name is None ("gguf")
    system: str | None = None  # the model's default system prompt
    aliases: tuple[str, ...] = ()
    cache_dir: str = ""  # the persistent prompt cache ("" or cache_bytes 0: none)
    cache_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # test seams and later settings, in the key

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EngineSpec:
        data = json.loads(text)
        data["aliases"] = tuple(data.get("aliases", ()))
        return cls(**data)

    def key(self) -> str:
        """A name for the worker of this spec: the file's identity (a replaced file is another
        key), every load-time setting, and the starchat version and protocol (never a worker
        of another version)."""
        try:
            st = os.stat(self.path)
            identity = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            identity = []
        text = json.dumps([self.to_json(), identity, __version__, PROTOCOL])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = ["PROTOCOL", "EngineSpec"]
