"""What Ollama's model routes say about the served model: ``/api/tags``, ``/api/show``, ``/api/ps``.

Read once from the GGUF header (cheap) the first time a route asks. ``digest`` is not
the file's sha256 (hashing gigabytes per start is too slow): it is the sha256 of the
file's size and its first and last MiB, stable for one file and different for another.
``size_vram`` is 0 unless the engine put every layer on the GPU (then the file size).
``template`` is Ollama's Go-template notation of the FIM layout for a model with FIM tokens
(editors read it: Continue enables FIM when it mentions ``.Suffix``), else the file's own
chat template for information. The served model is the only one listed: ``starchat serve`` runs one model per
process, and a model an editor could pick but never use would only fail later.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starchat_cli.engine.contract import Engine
from starchat_cli.models.gguf_info import ArraySummary, find_tokens, read_gguf_info

from .config import ServerConfig
from .ollama_requests import served_name

FIM_TOKENS = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>")
# /api/show's template for a model with FIM tokens, in Ollama's Go-template notation: what
# starchat does with ``suffix`` (prefix-suffix-middle). Continue turns fill-in-the-middle on
# only when the template mentions ``.Suffix``; starchat renders prompts itself either way.
FIM_TEMPLATE = (
    "{{- if .Suffix }}<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>"
    "{{- else }}{{ .Prompt }}{{- end }}"
)
NEVER_EXPIRES = "9999-12-31T23:59:59Z"  # the model stays loaded until the server stops


def rfc3339(ts: float | None = None) -> str:
    """A UTC time as Ollama writes it: ``2024-05-01T12:00:00.123456Z``."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parameter_size(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def cheap_digest(path: Path, size: int) -> str:
    """sha256 of the size and the first and last MiB: stable, and fast for a 10 GB file."""
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        h.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            h.update(handle.read(1 << 20))
    return h.hexdigest()


@dataclass
class ModelFacts:
    """The served model as Ollama describes a model (empty fields for an engine with no file)."""

    size: int = 0
    digest: str = ""
    modified_at: str = ""
    family: str = "unknown"
    parameter_size: str = ""
    quant: str = ""
    template: str = ""  # FIM_TEMPLATE for a model with FIM tokens, else the file's chat template
    fim: bool | None = None  # None: unknown (no file to read); the engine decides
    model_info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, location: str) -> ModelFacts:
        path = Path(location)
        if not path.is_file():
            return cls(modified_at=rfc3339())
        gi = read_gguf_info(path)
        fim = set(FIM_TOKENS) <= find_tokens(path, FIM_TOKENS)
        info: dict[str, Any] = {
            key: (None if isinstance(value, (ArraySummary, list)) else value)
            for key, value in gi.metadata.items()
            if key != "tokenizer.chat_template"
        }
        info["general.parameter_count"] = gi.n_params
        return cls(
            size=gi.file_size,
            digest=cheap_digest(path, gi.file_size),
            modified_at=rfc3339(path.stat().st_mtime),
            family=gi.architecture,
            parameter_size=parameter_size(gi.n_params),
            quant=gi.quant,
            template=(FIM_TEMPLATE if fim else gi.chat_template) or "",
            fim=fim,
            model_info=info,
        )

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quant,
        }

    def capabilities(self) -> list[str]:
        return ["completion", "insert"] if self.fim else ["completion"]


class ServedModel:
    """The Ollama view of one engine's model, read on first use."""

    def __init__(self, engine: Engine, config: ServerConfig) -> None:
        self.engine, self.config = engine, config
        self._facts: ModelFacts | None = None

    @property
    def facts(self) -> ModelFacts:
        if self._facts is None:
            self._facts = ModelFacts.read(self.engine.info.location)
        return self._facts

    @property
    def has_facts(self) -> bool:
        return self._facts is not None

    @property
    def quant(self) -> str:
        return self.facts.quant

    def name(self) -> str:
        return served_name(self.config)

    def tags(self) -> dict[str, Any]:
        f = self.facts
        entry = {
            "name": self.name(),
            "model": self.name(),
            "modified_at": f.modified_at,
            "size": f.size,
            "digest": f.digest,
            "details": f.details(),
        }
        return {"models": [entry]}

    def parameters(self) -> str:
        c = self.config
        lines = [f"num_ctx {self.engine.info.n_ctx}", f"temperature {c.default_temperature:g}"]
        lines.append(f"top_p {c.default_top_p:g}")
        return "\n".join(lines)

    def show(self) -> dict[str, Any]:
        f = self.facts
        params = self.parameters()
        modelfile = "\n".join(
            [
                "# Modelfile generated by starchat serve",
                f"FROM {self.engine.info.location}",
                *(f"PARAMETER {line}" for line in params.splitlines()),
                "",
            ]
        )
        return {
            "modelfile": modelfile,
            "parameters": params,
            "template": f.template,
            "details": f.details(),
            "model_info": f.model_info,
            "capabilities": f.capabilities(),
            "modified_at": f.modified_at,
        }

    def ps(self) -> dict[str, Any]:
        f = self.facts
        info = self.engine.info
        if not info.loaded:
            return {"models": []}
        placement = info.placement.lower()
        on_gpu = "every layer" in placement or "all layers" in placement
        entry = {
            "name": self.name(),
            "model": self.name(),
            "size": f.size,
            "digest": f.digest,
            "details": f.details(),
            "expires_at": NEVER_EXPIRES,
            "size_vram": f.size if on_gpu else 0,
            "context_length": info.n_ctx,
        }
        return {"models": [entry]}


__all__ = ["FIM_TEMPLATE", "FIM_TOKENS", "ModelFacts", "ServedModel", "cheap_digest", "rfc3339"]
