"""A real HTTP server on 127.0.0.1 that speaks the part of the Hub API starchat uses.

- ``GET /api/models/{org}/{name}/revision/{rev}?blobs=true``: model info with siblings
  (size, git blob id, LFS sha256) and the commit, as huggingface_hub's ``model_info`` reads it;
- ``GET|HEAD /{org}/{name}/resolve/{rev}/{file}``: the bytes, with Range (206 +
  Content-Range), ETag, X-Repo-Commit and Content-Length.
Test knobs: cut the connection after N bytes, serve corrupted bytes, gated repos (401
without a token), and a count of the bytes served per file.

    hub = FakeHub()
    hub.add(GGUF_REPO, {Q4: data})
    url = hub.start()            # http://127.0.0.1:PORT, for HF_ENDPOINT
    hub.close()
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

# The repository the catalog's starchat2 pulls its prebuilt GGUF files from, and two of them.
GGUF_REPO = "bartowski/starchat2-15b-v0.1-GGUF"
Q4 = "starchat2-15b-v0.1-Q4_K_M.gguf"
Q8 = "starchat2-15b-v0.1-Q8_0.gguf"


def partial_download(hf_home: Path, at_least: int, deadline: float = 60) -> Path:
    """Wait until a download into the Hub cache under ``hf_home`` has written ``at_least`` bytes
    of its partial (``*.incomplete``) file: that file."""
    end = time.time() + deadline
    while time.time() < end:
        partial = list((hf_home / "hub").rglob("*.incomplete"))
        if partial and partial[0].stat().st_size > at_least:
            return partial[0]
        time.sleep(0.05)
    raise AssertionError("the download never started")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    gated: bool = False
    token: str = "hf_test_token"


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    served: Counter = field(default_factory=Counter)  # bytes sent per "repo/file"
    requests: list[str] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)  # "repo/file" -> bytes, once
    corrupt: dict[str, int] = field(default_factory=dict)  # "repo/file" -> times to corrupt
    lfs_min: int = 1024
    claimed_sizes: dict[str, int] = field(default_factory=dict)  # "repo/file" -> size to report
    throttle: float = 0.0  # seconds to wait after each 256 KiB sent (a slow link)
    redirect_to: str | None = None  # answer /resolve/ with 302 to this base URL (a CDN)
    headers_seen: list[dict[str, str]] = field(default_factory=list)  # request headers, in order
    url: str = ""  # once started
    server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def add(self, repo: str, files: dict[str, bytes], *, gated: bool = False) -> Repo:
        commit = hashlib.sha1(
            repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()
        ).hexdigest()
        self.repos[repo] = Repo(dict(files), commit, gated)
        return self.repos[repo]

    def info(self, repo: str) -> dict:
        r = self.repos[repo]
        siblings = []
        for name, data in sorted(r.files.items()):
            size = self.claimed_sizes.get(f"{repo}/{name}", len(data))
            sib = {"rfilename": name, "size": size, "blobId": git_blob_id(data)}
            if len(data) >= self.lfs_min or name.endswith((".gguf", ".safetensors", ".bin")):
                sib["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 134}
            siblings.append(sib)
        return {
            "id": repo,
            "modelId": repo,
            "sha": r.commit,
            "private": False,
            "gated": "auto" if r.gated else False,
            "siblings": siblings,
        }

    def start(self, host: str = "127.0.0.1") -> str:
        """Serve on a free port of ``host`` in a daemon thread: the base URL."""
        self.server = ThreadingHTTPServer((host, 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self.server.server_address[1]}"
        return self.url

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _authorized(self, repo: Repo) -> bool:
                return not repo.gated or self.headers.get("Authorization") == f"Bearer {repo.token}"

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)
                hub.requests.append(f"{self.command} {path}")
                hub.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
                if m:
                    repo = hub.repos.get(m.group(1))
                    if repo is None:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    if not self._authorized(repo):
                        return self._error(401, "GatedRepo", "Access to this model is restricted")
                    body = json.dumps(hub.info(m.group(1))).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m:
                    return self._error(404, "NotFound", "no such route")
                repo = hub.repos.get(m.group(1))
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if not self._authorized(repo):
                    return self._error(401, "GatedRepo", "Access to this model is restricted")
                if hub.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", hub.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = repo.files.get(m.group(3))
                if data is None:
                    return self._error(404, "EntryNotFound", "Entry not found")
                key = f"{m.group(1)}/{m.group(3)}"
                if hub.corrupt.get(key):
                    hub.corrupt[key] -= 1
                    data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    rm = re.fullmatch(r"bytes=(\d+)-", rng)
                    start = int(rm.group(1)) if rm else 0
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", repo.commit)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                limit = hub.cut_after.pop(key, None)
                if limit is not None:
                    self.wfile.write(body[:limit])
                    self.wfile.flush()
                    hub.served[key] += min(limit, len(body))
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                if hub.throttle:
                    for i in range(0, len(body), 1 << 18):
                        try:
                            self.wfile.write(body[i : i + (1 << 18)])
                            self.wfile.flush()
                        except OSError:  # the client went away
                            return
                        hub.served[key] += len(body[i : i + (1 << 18)])
                        time.sleep(hub.throttle)
                    return
                self.wfile.write(body)
                hub.served[key] += len(body)

        return Handler
