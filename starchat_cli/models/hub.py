"""Downloads from the Hugging Face Hub into its own cache, resumable and verified.

Metadata (file list, sizes, LFS sha256, the commit) comes from ``huggingface_hub``'s
``HfApi.model_info``, which honours ``HF_ENDPOINT``, ``HF_TOKEN`` and the stored login.
The bytes are fetched here rather than with ``hf_hub_download`` because that function
throws a partial file away when interrupted: a 10 GB model must resume where it stopped.
Files land in the standard cache layout (``models--ORG--NAME/blobs/<hash>``, a
``snapshots/<commit>/<file>`` link, ``refs/<revision>``), so every Hugging Face tool
sees them. A partial download is ``blobs/<hash>.incomplete``; each file is verified
(sha256 for LFS files, the git blob id for others) before it is linked in, and a
mismatch discards it and fetches it once more.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from starchat_cli.core.errors import ExitCode, StarchatError
from starchat_cli.core.paths import hf_hub_cache
from starchat_cli.core.units import MIB, ensure_free_space

CHUNK = 1 << 20
ProgressFn = Callable[[str, int, int], None]  # (file name, bytes done, bytes total)


class HubError(StarchatError):
    exit_code = ExitCode.REMOTE


class OfflineError(HubError):
    pass


class IntegrityError(HubError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git object id (sha1 of "blob <size>\0" + content)

    @property
    def blob_name(self) -> str:
        return self.sha256 or self.blob_id or hashlib.sha256(self.name.encode()).hexdigest()


@dataclass
class RepoListing:
    repo: str
    commit: str
    files: list[RemoteFile] = field(default_factory=list)


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def repo_folder(repo: str, cache: Path | None = None) -> Path:
    return (cache or hf_hub_cache()) / ("models--" + repo.replace("/", "--"))


def _login_hint() -> str:
    return "set HF_TOKEN to a token with access (huggingface.co/settings/tokens) or run `hf auth login`"


def list_repo(repo: str, revision: str = "main") -> RepoListing:
    """The files of a Hub model repo at a revision, with sizes and hashes."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=endpoint(), token=token())
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except GatedRepoError:
        raise HubError(f"{repo} is gated: accept its terms on the Hub, then {_login_hint()}") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        hint = "" if token() else f" (if it is private or gated: {_login_hint()})"
        raise HubError(f"no model repo {repo!r} on {endpoint()}{hint}") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"{repo}: access refused ({status}): {_login_hint()}") from None
        raise HubError(f"the Hub answered an error for {repo}: {exc}".splitlines()[0]) from None
    except Exception as exc:  # network: httpx errors, timeouts, DNS
        if _is_network_error(exc):
            raise OfflineError(
                f"cannot reach {endpoint()} ({type(exc).__name__}): check the connection or HF_ENDPOINT"
            ) from None
        raise
    files = []
    for sib in info.siblings or ():
        lfs = getattr(sib, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = getattr(lfs, "size", None) if lfs is not None else None
        files.append(
            RemoteFile(sib.rfilename, int(size if size is not None else (sib.size or 0)), sha, sib.blob_id)
        )
    return RepoListing(repo, info.sha or revision, files)


def _is_network_error(exc: Exception) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {
            "ConnectError",
            "ConnectTimeout",
            "ReadTimeout",
            "NetworkError",
            "TimeoutException",
            "OfflineModeIsEnabled",
            "TransportError",
            "ConnectionError",
        }
    )


# -- the cache ----------------------------------------------------------------------------------


def cached_file(repo: str, filename: str, revision: str = "main", commit: str | None = None) -> Path | None:
    """A complete file from the cache (by commit, or by the commit a revision last pointed at)."""
    folder = repo_folder(repo)
    if commit is None:
        ref = folder / "refs" / revision
        try:
            commit = ref.read_text().strip()
        except OSError:
            commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None
    if commit is None:
        return None
    path = folder / "snapshots" / commit / filename
    return path if path.exists() else None


def cached_listing(repo: str, revision: str = "main") -> RepoListing | None:
    """What the cache holds of a repo, for offline use (names only, sizes from disk)."""
    folder = repo_folder(repo)
    try:
        commit = (folder / "refs" / revision).read_text().strip()
    except OSError:
        return None
    snap = folder / "snapshots" / commit
    if not snap.is_dir():
        return None
    files = [
        RemoteFile(str(p.relative_to(snap)), p.stat().st_size) for p in sorted(snap.rglob("*")) if p.is_file()
    ]
    return RepoListing(repo, commit, files)


def missing_bytes(repo: str, commit: str, files: Iterable[RemoteFile]) -> int:
    """Bytes still to fetch: sizes of files not in the cache, minus partial downloads."""
    blobs = repo_folder(repo) / "blobs"
    total = 0
    for f in files:
        if cached_file(repo, f.name, commit=commit) is not None:
            continue
        partial = blobs / f"{f.blob_name}.incomplete"
        have = partial.stat().st_size if partial.exists() else 0
        total += max(0, f.size - have)
    return total


def check_disk_space(needed: int, where: Path, margin: int = 256 * MIB) -> None:
    """Refuse a download of ``needed`` bytes into ``where`` that would fill the disk."""
    ensure_free_space(
        needed,
        where,
        margin=margin,
        purpose="to download",
        advice="free some space or set HF_HOME to a bigger disk",
    )


def _git_blob_id(path: Path) -> str:
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


def verify(path: Path, f: RemoteFile) -> bool:
    if path.stat().st_size != f.size:
        return False
    if f.sha256:
        return _sha256(path) == f.sha256
    if f.blob_id:
        return _git_blob_id(path) == f.blob_id
    return True


def download(
    listing: RepoListing,
    f: RemoteFile,
    progress: ProgressFn | None = None,
    revision: str = "main",
) -> Path:
    """Fetch one file into the cache (resuming a partial download), verify it, link it in."""
    done = cached_file(listing.repo, f.name, commit=listing.commit)
    if done is not None:
        return done
    folder = repo_folder(listing.repo)
    from starchat_cli.core.fsutil import ensure_folder

    blobs = ensure_folder(folder / "blobs")
    blob = blobs / f.blob_name
    if not (blob.exists() and verify(blob, f)):
        for attempt in (1, 2):
            _fetch(listing, f, blobs / f"{f.blob_name}.incomplete", progress)
            partial = blobs / f"{f.blob_name}.incomplete"
            if verify(partial, f):
                os.replace(partial, blob)
                break
            partial.unlink(missing_ok=True)  # corrupt: never linked in, fetched again from zero
            if attempt == 2:
                raise IntegrityError(
                    f"{f.name} from {listing.repo} failed its checksum twice: the download is corrupt "
                    "(a proxy or the server is altering it); nothing was registered"
                )
    snap = folder / "snapshots" / listing.commit / f.name
    snap.parent.mkdir(parents=True, exist_ok=True)
    if snap.is_symlink() or snap.exists():
        snap.unlink()
    try:
        snap.symlink_to(os.path.relpath(blob, snap.parent))
    except OSError:  # no symlinks (some Windows set-ups): a copy
        shutil.copyfile(blob, snap)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        from starchat_cli.core.fsutil import atomic_write_text

        atomic_write_text(folder / "refs" / revision, listing.commit)
    return snap


def _write_error(partial: Path, f: RemoteFile, exc: OSError) -> Exception:
    """A failed write of the partial download: the partial stays where it is, for the next pull."""
    from starchat_cli.core.errors import StarchatError
    from starchat_cli.core.fsutil import DISK_FULL, output_error

    if exc.errno in DISK_FULL:
        try:
            kept = partial.stat().st_size
        except OSError:
            kept = 0
        return StarchatError(
            f"disk full while downloading {f.name} ({kept:,} of {f.size:,} bytes kept in {partial}): "
            "free some space and run the same command again to resume"
        )
    return output_error(partial, exc)


def _fetch(listing: RepoListing, f: RemoteFile, partial: Path, progress: ProgressFn | None) -> None:
    import httpx

    have = partial.stat().st_size if partial.exists() else 0
    if have > f.size:
        partial.unlink()
        have = 0
    url = f"{endpoint()}/{listing.repo}/resolve/{listing.commit}/{f.name}"
    headers = {"Accept-Encoding": "identity", "User-Agent": "starchat"}
    if token():
        headers["Authorization"] = f"Bearer {token()}"
    if have:
        headers["Range"] = f"bytes={have}-"
    if progress:
        progress(f.name, have, f.size)
    if have == f.size:
        return
    try:
        with httpx.stream(
            "GET", url, headers=headers, follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0)
        ) as res:
            if res.status_code in (401, 403):
                raise HubError(
                    f"{listing.repo}/{f.name}: access refused ({res.status_code}): {_login_hint()}"
                )
            if res.status_code == 404:
                raise HubError(f"{f.name} is not in {listing.repo} at {listing.commit[:12]}")
            if res.status_code == 416:  # range not satisfiable: the partial file is stale
                partial.unlink(missing_ok=True)
                return
            if res.status_code not in (200, 206):
                raise HubError(f"downloading {f.name} failed: HTTP {res.status_code}")
            mode = "ab" if res.status_code == 206 and have else "wb"
            if mode == "wb":
                have = 0
            last = 0.0
            try:
                with partial.open(mode) as out:
                    for chunk in res.iter_bytes():
                        out.write(chunk)
                        have += len(chunk)
                        now = time.monotonic()
                        if progress and now - last > 0.1:
                            progress(f.name, have, f.size)
                            last = now
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise _write_error(partial, f, exc) from None
            if progress:
                progress(f.name, have, f.size)
    except httpx.HTTPError as exc:
        raise OfflineError(
            f"the download of {f.name} broke off at {have:,} of {f.size:,} bytes ({type(exc).__name__}): "
            "run the same command again to resume"
        ) from None
    if have < f.size:
        raise OfflineError(
            f"the download of {f.name} stopped at {have:,} of {f.size:,} bytes: run the same command again to resume"
        )


def remove_from_cache(path: Path) -> int:
    """Delete a snapshot link and its blob when no other snapshot uses it; bytes freed."""
    freed = 0
    real = Path(os.path.realpath(path))
    if path.is_symlink():
        path.unlink()
    snapshots = real.parent.parent / "snapshots" if real.parent.name == "blobs" else None
    if real.exists() and real.parent.name == "blobs" and snapshots is not None:
        still_used = any(Path(os.path.realpath(p)) == real for p in snapshots.rglob("*") if p.is_symlink())
        if not still_used:
            freed = real.stat().st_size
            real.unlink()
    elif real.exists() and not path.is_symlink():
        freed = real.stat().st_size
        real.unlink()
    return freed
