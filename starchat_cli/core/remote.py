"""A remote engine: any OpenAI-compatible server (starchat serve, llama-server, vLLM, TGI).

It has the same surface as :class:`starchat_cli.core.engine.Engine` (``generate`` returns
a :class:`Generation` of text chunks with stats), so the faces work the same on both.
The remote model's prompt format is the server's business; when the model name matches
a catalog entry, that entry's stops and default system prompt are sent along.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from .catalog import CATALOG
from .engine import Generation, GenerationParams, GpuChoice, Stats
from .errors import ExitCode, StarchatError
from .fit import FitResult
from .prompts import FORMATS, Message
from .stops import StopTextFilter


class RemoteError(StarchatError):
    exit_code = ExitCode.REMOTE


def api_base(url: str) -> str:
    """``http://host:8080`` or ``http://host:8080/v1/`` -> ``http://host:8080/v1``."""
    if "://" not in url:
        raise RemoteError(
            f"endpoint {url!r} is not a URL (http://HOST:PORT) or a profile name from the config"
        )
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


@dataclass
class RemoteBackend:
    """What the faces read from a backend, for a remote server."""

    url: str
    n_ctx: int = 0  # unknown: the server fits the prompt
    loaded: bool = True
    flash_attn: bool = False
    warnings: list[str] = field(default_factory=list)
    gpu: GpuChoice = field(default_factory=lambda: GpuChoice(0, None, "remote server"))
    path: str = ""

    def load(self) -> None:
        return None

    def take_load_seconds(self) -> float:
        return 0.0


@dataclass(frozen=True)
class RemoteFormat:
    name: str = "remote"
    description: str = "the server applies the model's own chat template"


class RemoteEngine:
    def __init__(
        self, url: str, api_key: str | None = None, model: str | None = None, timeout: float = 600.0
    ) -> None:
        self.base = api_base(url)
        self.api_key = api_key
        self.timeout = timeout
        self._model = model
        self.backend = RemoteBackend(url=self.base, path=self.base)
        self.prompt_format = RemoteFormat()
        spec = CATALOG.get(model or "")
        self.default_system = spec.default_system if spec else None
        fmt = FORMATS.get(spec.prompt_format) if spec else None
        self.stops: tuple[str, ...] = (*fmt.stop_tokens, *fmt.stop_texts) if fmt else ()

    # -- HTTP ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _client(self):  # -> httpx.Client
        import httpx

        return httpx.Client(timeout=httpx.Timeout(self.timeout, connect=10.0), headers=self._headers())

    def _fail(self, status: int, body: bytes) -> RemoteError:
        try:
            detail = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = body.decode("utf-8", "replace").strip()[:200] or "no details"
        if status in (401, 403):
            return RemoteError(
                f"{self.base} refused the request ({status}: {detail}): pass --api-key or set STARCHAT_API_KEY"
            )
        return RemoteError(f"{self.base} answered {status}: {detail}")

    def _unreachable(self, exc: Exception) -> RemoteError:
        return RemoteError(f"cannot reach {self.base} ({type(exc).__name__}: {exc}): is the server running?")

    @property
    def model(self) -> str:
        """The model to ask for: as given, else the first one the server lists."""
        if self._model is None:
            import httpx

            try:
                with self._client() as client:
                    res = client.get(f"{self.base}/models")
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            if res.status_code != 200:
                raise self._fail(res.status_code, res.content)
            try:
                self._model = res.json()["data"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise RemoteError(f"{self.base}/models listed no model: pass -m MODEL") from None
        return self._model

    # -- generation ------------------------------------------------------------------------
    def generate(
        self,
        turns: Sequence[Message],
        params: GenerationParams | None = None,
        *,
        system: str | None = None,
        attachment: str | None = None,
        attach: Callable[[str], str] | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        params = params or GenerationParams()
        msgs = list(turns)
        if attachment is not None and attach is not None:
            msgs[-1] = Message(msgs[-1].role, attach(attachment))
        chosen = self.default_system if system is None else system
        if chosen:
            msgs.insert(0, Message("system", chosen))
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in msgs],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.seed is not None:
            body["seed"] = params.seed
        stops = (*self.stops, *params.stop)
        if stops:
            body["stop"] = list(dict.fromkeys(stops))[:4]  # OpenAI accepts up to 4
        stats = Stats()
        chunks = self._stream(body, stats, stops, cancel)
        return Generation(chunks, stats, FitResult([], msgs, attachment_chars=len(attachment or "")))

    def _stream(
        self,
        body: dict[str, object],
        stats: Stats,
        stops: tuple[str, ...],
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        import httpx

        started = time.perf_counter()
        stop_filter = StopTextFilter(stops)
        first_at = 0.0
        counted = 0
        finish = None
        try:
            with (
                self._client() as client,
                client.stream("POST", f"{self.base}/chat/completions", json=body) as res,
            ):
                if res.status_code != 200:
                    raise self._fail(res.status_code, res.read())
                for line in res.iter_lines():
                    if cancel is not None and cancel.is_set():
                        stats.stop_reason = "cancelled"
                        break
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        continue
                    usage = event.get("usage")
                    if usage:
                        stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                        stats.generated_tokens = int(usage.get("completion_tokens") or counted)
                    for choice in event.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                        finish = choice.get("finish_reason") or finish
                        if not text:
                            continue
                        now = time.perf_counter()
                        if not counted:
                            first_at = now
                            stats.ttft_seconds = now - started
                        counted += 1
                        stats.decode_seconds = now - first_at
                        out = stop_filter.feed(text)
                        if out:
                            yield out
                        if stop_filter.stopped:
                            finish = "stop"
                            break
                    if stop_filter.stopped:
                        break
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        finally:
            if not stats.generated_tokens:
                stats.generated_tokens = counted
            if finish is not None:
                stats.stop_reason = "length" if finish == "length" else "stop"
        if not stop_filter.stopped:
            tail = stop_filter.flush()
            if tail:
                yield tail
