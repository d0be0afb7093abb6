"""The persistent prompt cache: llama.cpp sequence states on disk, found by longest common prefix.

An entry is two files in the cache folder (``starchat paths`` shows it):

- ``ID.state``: what ``llama_state_seq_save_file`` wrote (the KV cache of sequence 0 and its tokens);
- ``ID.json``: the entry's key, its token ids, the state file's size and CRC-32, when it was made.

The JSON is written last, so an entry exists only once its state file is complete; a state file
is handed to llama.cpp only after its size and CRC-32 match (llama.cpp aborts the process on some
truncated files and would load garbage from a corrupted one). Every field of a side file is
checked once (shape, types, bounds: ``[]``, ``NaN`` or a size of ``1e400`` are damage). Anything
that does not check out is removed, with a note (``-v``). Temp files left by a killed run are
swept on the next save. The key covers everything that changes the KV cache: the model file
(size, mtime and a hash of its first and last MiB), n_ctx, flash attention, the KV type and the
llama.cpp build; a state is never offered to another model or setting. The size cap evicts the
least recently used entries.

    cache = PromptCache(folder, cap_bytes=4 * 10**9)
    hit = cache.best(key.digest, tokens)      # the longest shared prefix, or None
    cache.save(key, tokens, write_state)      # write_state(path) writes the llama.cpp state
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from starchat_cli.core.records import BadRecord, integer, integers, load, number, text

STATE_SUFFIX = ".state"
META_SUFFIX = ".json"
TMP_PREFIX = "tmp-"
FORMAT = 1  # of the JSON side file
MIN_TOKENS = 128  # shorter sequences are cheaper to evaluate than to look up, write and keep
STALE_TMP_SECONDS = 600  # a temp file this old belongs to a run that died
_HASH_SPAN = 1 << 20  # bytes hashed at each end of the model file
# Bounds of a side file's fields: anything past them is damage, not a value.
_MAX_TOKEN = 2**31 - 1  # llama_token is an int32
_MAX_SIZE = 1 << 50  # bytes (a PiB) of one state file
_LATEST = 1e11  # seconds since 1970 (year 5138)


def model_fingerprint(path: Path) -> str:
    """Identity of a model file: size, mtime and a SHA-256 of its first and last MiB."""
    st = path.stat()
    digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_HASH_SPAN))
        if st.st_size > 2 * _HASH_SPAN:
            handle.seek(-_HASH_SPAN, os.SEEK_END)
            digest.update(handle.read(_HASH_SPAN))
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CacheKey:
    """Everything a saved state depends on; two keys with the same ``digest`` are interchangeable."""

    model: str  # the name shown by `starchat cache list` (not part of the identity)
    fingerprint: str
    n_ctx: int
    flash_attn: bool
    kv_type: str
    llama: str  # llama-cpp-python's version: the state file format comes with it

    @property
    def digest(self) -> str:
        ident = f"{self.fingerprint}|{self.n_ctx}|{int(self.flash_attn)}|{self.kv_type}|{self.llama}|{FORMAT}"
        return hashlib.sha256(ident.encode()).hexdigest()[:24]


@dataclass
class CacheEntry:
    id: str
    folder: Path
    key: str
    model: str
    tokens: list[int]
    size: int
    crc32: int
    created: float
    last_used: float = 0.0
    exact: int = 0  # the first ``exact`` tokens were evaluated as a prompt in exact batches

    @property
    def state_path(self) -> Path:
        return self.folder / f"{self.id}{STATE_SUFFIX}"

    @property
    def meta_path(self) -> Path:
        return self.folder / f"{self.id}{META_SUFFIX}"

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


@dataclass
class Hit:
    entry: CacheEntry
    prefix: int  # tokens the entry shares with the prompt


@dataclass
class Removed:
    count: int = 0
    bytes: int = 0
    names: list[str] = field(default_factory=list)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _parse_meta(rec: dict[str, Any], ident: str, folder: Path, last_used: float) -> CacheEntry:
    """A side file's record, every field checked once (BadRecord: the entry is removed)."""
    integer(rec, "format", low=FORMAT, high=FORMAT)
    tokens = integers(rec, "tokens", high=_MAX_TOKEN, min_len=1)
    return CacheEntry(
        id=ident,
        folder=folder,
        key=text(rec, "key", pattern=r"[0-9a-f]{24}"),  # CacheKey.digest
        model=text(rec, "model", default=""),
        tokens=tokens,
        size=integer(rec, "size", high=_MAX_SIZE),
        crc32=integer(rec, "crc32", high=0xFFFFFFFF),
        created=number(rec, "created", high=_LATEST, default=0.0),
        last_used=last_used,
        exact=integer(rec, "exact", high=len(tokens), default=0),
    )


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


class PromptCache:
    """A folder of saved sequence states with a size cap (``cap_bytes`` 0: nothing is written)."""

    def __init__(self, folder: Path, cap_bytes: int) -> None:
        self.folder = Path(folder)
        self.cap_bytes = max(0, int(cap_bytes))
        self.notes: list[str] = []  # what was found wrong and removed (shown under -v)
        self.discarded_bytes = 0  # freed by removing damaged or superseded entries

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    # -- reading ------------------------------------------------------------------------
    def entries(self, key: str | None = None) -> list[CacheEntry]:
        """Every complete entry (of one key), most recently used first; unreadable side files go."""
        found: list[CacheEntry] = []
        try:
            metas = sorted(self.folder.glob(f"*{META_SUFFIX}"))
        except OSError:
            return []
        for meta in metas:
            if meta.name.startswith(TMP_PREFIX) or not meta.is_file():
                continue  # a save in progress, or a folder that only looks like a side file
            entry = self._read_meta(meta)
            if entry is None:
                continue
            if key is None or entry.key == key:
                found.append(entry)
        found.sort(key=lambda e: e.last_used, reverse=True)
        return found

    def _read_meta(self, meta: Path) -> CacheEntry | None:
        ident = meta.name[: -len(META_SUFFIX)]
        try:
            rec = load(meta.read_bytes())
            return _parse_meta(rec, ident, self.folder, last_used=meta.stat().st_mtime)
        except FileNotFoundError:
            return None  # removed meanwhile (another run evicted or cleared it)
        except (OSError, BadRecord) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._discard(ident, f"damaged prompt-cache entry {ident} removed (side file: {reason})")
            return None

    def best(self, key: str, tokens: Sequence[int]) -> Hit | None:
        """The entry sharing the longest token prefix with ``tokens`` (at least one token)."""
        hit: Hit | None = None
        for entry in self.entries(key):
            n = common_prefix(entry.tokens, tokens)
            if n and (hit is None or n > hit.prefix):
                hit = Hit(entry, n)
        return hit

    def verify(self, entry: CacheEntry) -> bool:
        """True when the state file is whole (size and CRC-32 as written); a bad entry is removed."""
        try:
            ok = entry.state_path.stat().st_size == entry.size and _crc32(entry.state_path) == entry.crc32
        except OSError:
            ok = False
        if not ok:
            self._discard(entry.id, f"damaged prompt-cache entry {entry.id} removed (size or checksum)")
        return ok

    def touch(self, entry: CacheEntry) -> None:
        """Mark an entry used now (its side file's mtime is its last use, for eviction)."""
        try:
            os.utime(entry.meta_path)
        except OSError:
            pass

    def discard(self, entry: CacheEntry, why: str) -> None:
        self._discard(entry.id, why)

    # -- writing ------------------------------------------------------------------------
    def save(
        self,
        key: CacheKey,
        tokens: Sequence[int],
        write_state: Callable[[Path], bool],
        exact: int = 0,
    ) -> CacheEntry | None:
        """Write a new entry for ``tokens``: ``write_state(path)`` writes the state file.

        Entries of the same key whose tokens are a prefix of these are superseded and removed
        (a chat keeps one entry, its latest turn). Returns None when nothing was written.
        """
        if not self.enabled or len(tokens) < MIN_TOKENS:
            return None
        tokens = list(tokens)
        digest = key.digest
        existing = self.entries(digest)
        if any(e.tokens == tokens for e in existing):
            return None  # already saved as it is
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only or full cache folder: answers still work, uncached
            self.notes.append(f"prompt cache not saved: cannot create {self.folder} ({exc.strerror or exc})")
            return None
        self._sweep()
        ident = f"{digest[:12]}-{hashlib.sha256(repr(tokens).encode()).hexdigest()[:16]}"
        tmp_state = self.folder / f"{TMP_PREFIX}{os.getpid()}-{ident}{STATE_SUFFIX}"
        tmp_meta = self.folder / f"{TMP_PREFIX}{os.getpid()}-{ident}{META_SUFFIX}"
        entry = CacheEntry(ident, self.folder, digest, key.model, tokens, 0, 0, time.time(), exact=exact)
        try:
            if not write_state(tmp_state):
                raise OSError("llama.cpp did not write the state")
            entry.size = tmp_state.stat().st_size
            entry.crc32 = _crc32(tmp_state)
            meta = {
                "format": FORMAT,
                "key": digest,
                "model": key.model,
                "n_ctx": key.n_ctx,
                "size": entry.size,
                "crc32": entry.crc32,
                "created": entry.created,
                "exact": exact,
                "tokens": tokens,
            }
            tmp_meta.write_text(json.dumps(meta, separators=(",", ":")), "utf-8")
            os.replace(tmp_state, entry.state_path)
            os.replace(tmp_meta, entry.meta_path)  # the entry exists from here on
        except OSError as exc:
            for path in (tmp_state, tmp_meta):
                path.unlink(missing_ok=True)
            self.notes.append(f"prompt cache not saved ({exc})")
            return None
        for old in existing:
            if len(old.tokens) < len(tokens) and tokens[: len(old.tokens)] == old.tokens:
                self._discard(old.id, None)
        self.evict(keep=entry.id)
        return entry

    def evict(self, keep: str | None = None) -> Removed:
        """Remove least recently used entries until the folder is within the cap."""
        removed = Removed()
        entries = self.entries()
        total = sum(e.size for e in entries)
        for entry in reversed(entries):  # oldest use first
            if total <= self.cap_bytes:
                break
            if entry.id == keep:
                continue
            total -= entry.size
            removed.count += 1
            removed.bytes += entry.size
            removed.names.append(entry.model)
            self._discard(entry.id, None)
        return removed

    def clear(self, model: str | None = None) -> Removed:
        """Remove every entry (of one model name), temp files too; says what was freed."""
        removed = Removed()
        before = self.discarded_bytes
        entries = self.entries()  # damaged entries go here: freed too
        removed.bytes += self.discarded_bytes - before
        for entry in entries:
            if model is not None and entry.model != model:
                continue
            self._delete(entry.id)  # a folder that refuses deletion is an error here, not a silent no-op
            removed.count += 1
            removed.bytes += entry.size
            removed.names.append(entry.model)
        if model is None:
            removed.bytes += self._sweep(max_age=0)
        return removed

    def _delete(self, ident: str) -> None:
        from starchat_cli.core.fsutil import writing

        with writing(self.folder):
            for suffix in (META_SUFFIX, STATE_SUFFIX):
                (self.folder / f"{ident}{suffix}").unlink(missing_ok=True)

    def _discard(self, ident: str, why: str | None) -> None:
        for suffix in (META_SUFFIX, STATE_SUFFIX):
            path = self.folder / f"{ident}{suffix}"
            try:
                size = path.stat().st_size
                path.unlink()
                self.discarded_bytes += size
            except OSError:
                pass
        if why:
            self.notes.append(why)

    def _sweep(self, max_age: float = STALE_TMP_SECONDS) -> int:
        """Remove temp files of runs that died mid-save (and orphaned state files); bytes freed."""
        freed = 0
        now = time.time()
        try:
            paths = list(self.folder.iterdir())
        except OSError:
            return 0
        names = {p.name for p in paths}
        for path in paths:
            orphan = path.suffix == STATE_SUFFIX and f"{path.stem}{META_SUFFIX}" not in names
            temp = path.name.startswith(TMP_PREFIX)
            if not (orphan or temp):
                continue
            try:
                st = path.stat()
                if now - st.st_mtime >= max_age:
                    path.unlink()
                    freed += st.st_size
            except OSError:
                pass
        return freed


__all__ = ["CacheEntry", "CacheKey", "Hit", "PromptCache", "Removed", "common_prefix", "model_fingerprint"]
