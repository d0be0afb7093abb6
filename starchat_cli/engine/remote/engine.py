"""A remote engine: any OpenAI-compatible server (starchat serve, llama-server, vLLM, TGI).

It implements the :class:`~starchat_cli.engine.contract.Engine` contract (``generate`` and
``complete`` return a :class:`Generation` of text chunks with stats), so the faces work
the same on it as on a local model.
The remote model's prompt format is the server's business; when the model name matches
a catalog entry, that entry's stops and default system prompt are sent along.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator, Sequence

from starchat_cli.core.errors import ExitCode, StarchatError
from starchat_cli.engine.contract import EngineInfo, Generation, Stats, StopReason
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.attachment import Attachment
from starchat_cli.engine.prompting.fit import FitResult
from starchat_cli.engine.prompting.formats import FORMATS, Message
from starchat_cli.engine.prompting.stops import StopTextFilter, without_trailing_whitespace
from starchat_cli.engine.remote.events import content_type, events, first_bytes
from starchat_cli.models.catalog import CATALOG


class RemoteError(StarchatError):
    exit_code = ExitCode.REMOTE


class ContextRejected(RemoteError):
    """The server's 400 for a prompt longer than its context (OpenAI's ``context_length_exceeded``,
    llama-server's ``exceed_context_size_error``): a chat drops its oldest turns and asks again."""


CONTEXT_CODES = ("context_length_exceeded", "exceed_context_size_error")


def api_base(url: str) -> str:
    """``http://host:8080`` or ``http://host:8080/v1/`` -> ``http://host:8080/v1``."""
    if "://" not in url:
        raise RemoteError(
            f"endpoint {url!r} is not a URL (http://HOST:PORT) or a profile name from the config"
        )
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class RemoteEngine:
    def __init__(
        self, url: str, api_key: str | None = None, model: str | None = None, timeout: float = 600.0
    ) -> None:
        self.base = api_base(url)
        self.api_key = api_key
        self.timeout = timeout
        self._model = model
        spec = CATALOG.get(model or "")
        self.default_system = spec.default_system if spec else None
        fmt = FORMATS.get(spec.prompt_format) if spec else None
        self.stops: tuple[str, ...] = (*fmt.stop_tokens, *fmt.stop_texts) if fmt else ()
        self._rstrip = bool(fmt and fmt.strip_trailing_whitespace)
        self.prediction_supported = True  # False once the server rejected OpenAI's "prediction"

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self._model or "",
            location=self.base,
            remote=True,
            loaded=self._model is not None,
            prompt_format="remote",  # the server applies the model's own chat template
            placement="remote server",
            default_system=self.default_system,
        )

    def close(self) -> None:
        pass  # a client per request: nothing is held between them

    def persist(self) -> None:
        """Nothing is kept on this side: the server has its own prompt cache."""

    def load(self) -> EngineInfo:
        """Ask the server for its first model when none was named (a reachability check too)."""
        self.model  # noqa: B018
        return self.info

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
            error = json.loads(body)["error"]
            detail = error["message"]
        except (ValueError, KeyError, TypeError):
            error, detail = {}, body.decode("utf-8", "replace").strip()[:200] or "no details"
        if (
            status == 400
            and isinstance(error, dict)
            and {error.get("code"), error.get("type")} & set(CONTEXT_CODES)
        ):
            return ContextRejected(f"{self.base} answered {status}: {detail}")
        if status in (401, 403):
            return RemoteError(
                f"{self.base} refused the request ({status}: {detail}): pass --api-key or set STARCHAT_API_KEY"
            )
        return RemoteError(f"{self.base} answered {status}: {detail}")

    def _garbage(self, what: str) -> RemoteError:
        """A 200 that is not an answer (exit 10): ``what`` names what came back."""
        return RemoteError(f"{self.base} {what}")

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
                listing = res.json()
            except ValueError:
                raise RemoteError(
                    f"{self.base}/models answered 200 with {content_type(res.headers)}, not JSON: "
                    f"{first_bytes(res.content)} (is the endpoint the URL of an OpenAI-compatible API?)"
                ) from None
            try:
                self._model = listing["data"][0]["id"]
                if not isinstance(self._model, str):
                    raise TypeError
            except (KeyError, IndexError, TypeError):
                self._model = None
                raise RemoteError(
                    f"{self.base}/models listed no model ({first_bytes(res.content)}): pass -m MODEL"
                ) from None
        return self._model

    # -- generation ------------------------------------------------------------------------
    def generate(
        self,
        turns: Sequence[Message],
        params: GenerationParams | None = None,
        *,
        system: str | None = None,
        attachment: Attachment | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        params = params or GenerationParams()
        msgs = list(turns)
        if attachment is not None:
            msgs[-1] = Message(msgs[-1].role, attachment.turn(attachment.text))
        chosen = self.default_system if system is None else system
        if chosen:
            msgs.insert(0, Message("system", chosen))
        messages = [{"role": m.role, "content": m.content} for m in msgs]
        body = self._sampling(params, {"model": self.model, "messages": messages})
        if params.prediction and self.prediction_supported:
            body["prediction"] = {"type": "content", "content": params.prediction}
        stops = (*self.stops, *params.stop)
        if stops:
            body["stop"] = list(dict.fromkeys(stops))[:4]  # OpenAI accepts up to 4
        stats = Stats()
        fit = FitResult([], msgs, attachment_chars=len(attachment.text) if attachment else 0)
        chunks = self._fitted(body, stats, stops, cancel, fit)
        if self._rstrip:
            chunks = without_trailing_whitespace(chunks)
        return Generation(chunks, stats, fit)

    def _fitted(
        self,
        body: dict[str, Any],
        stats: Stats,
        stops: tuple[str, ...],
        cancel: threading.Event | None,
        fit: FitResult,
    ) -> Iterator[str]:
        """The chat reply; a server that finds the messages longer than its context (a 400, before
        any text) is asked again without the oldest user/assistant pair, as a local chat fits its
        history (the pairs left out are counted in ``stats`` and ``fit``)."""
        messages = list(body["messages"])
        head = messages[:1] if messages and messages[0]["role"] == "system" else []
        while True:
            try:
                yield from self._stream(
                    "chat/completions", {**body, "messages": messages}, stats, stops, cancel
                )
                return
            except ContextRejected:
                rest = messages[len(head) :]
                starts = [i for i, m in enumerate(rest) if m["role"] == "user"]
                if len(starts) < 2:  # only the latest question is left: it is too long itself
                    raise
                messages = [*head, *rest[starts[1] :]]
                fit.dropped_turns = stats.dropped_turns = fit.dropped_turns + 1
                fit.messages = [*fit.messages[: len(head)], *fit.messages[len(head) + starts[1] :]]

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Raw continuation through the server's ``/v1/completions`` (token ids go as they are)."""
        params = params or GenerationParams()
        wire_prompt = prompt if isinstance(prompt, str) else list(prompt)
        body = self._sampling(params, {"model": self.model, "prompt": wire_prompt})
        if params.stop:
            body["stop"] = list(dict.fromkeys(params.stop))[:4]
        stats = Stats()
        chunks = self._stream("completions", body, stats, tuple(params.stop), cancel)
        return Generation(chunks, stats, FitResult([], []))

    def count_tokens(self, messages: Sequence[Message]) -> None:
        """The server's tokenizer is out of reach: callers estimate."""
        return None

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> None:
        """Out of reach too (OpenAI's API has no tokenizer route)."""
        return None

    def token_pieces(self, tokens: Sequence[int]) -> None:
        return None

    def infill(
        self,
        prefix: str,
        suffix: str,
        params: GenerationParams | None = None,
        *,
        extra: Sequence[tuple[str, str]] = (),
        path: str | None = None,
        repo: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Fill in the middle through the server's ``/v1/completions`` with OpenAI's ``suffix``.

        The server renders the FIM prompt; ``extra``, ``path`` and ``repo`` have no place in
        that API and are not sent. A server that refuses is a :class:`RemoteError` saying so.
        """
        params = params or GenerationParams()
        body = self._sampling(params, {"model": self.model, "prompt": prefix, "suffix": suffix})
        if params.stop:
            body["stop"] = list(dict.fromkeys(params.stop))[:4]
        stats = Stats()
        chunks = self._stream("completions", body, stats, tuple(params.stop), cancel)

        def run() -> Iterator[str]:
            try:
                yield from chunks
            except RemoteError as exc:
                if exc.message.startswith("cannot reach"):
                    raise
                raise RemoteError(
                    f"{exc.message} (a fill-in-the-middle request: /v1/completions with 'suffix'); "
                    "the server or its model may not support it: use a starchat serve with a FIM model"
                ) from None

        return Generation(run(), stats, FitResult([], []))

    @staticmethod
    def _sampling(params: GenerationParams, body: dict[str, object]) -> dict[str, object]:
        body.update(
            stream=True,
            stream_options={"include_usage": True},
            temperature=params.temperature,
            top_p=params.top_p,
        )
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _stream(
        self,
        route: str,
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
        retry = False
        try:
            with (
                self._client() as client,
                client.stream("POST", f"{self.base}/{route}", json=body) as res,
            ):
                if res.status_code != 200:
                    detail = res.read()
                    if res.status_code == 400 and "prediction" in body and b"prediction" in detail:
                        retry = True  # the server does not take a prediction: plain, from now on
                    else:
                        raise self._fail(res.status_code, detail)
                else:
                    retry = False
                answer = (
                    ()
                    if retry
                    else events(content_type(res.headers), res.iter_lines(), res.read, self._garbage)
                )
                for event in answer:
                    if cancel is not None and cancel.is_set():
                        stats.stop_reason = StopReason.CANCELLED
                        break
                    usage = event.get("usage")
                    if isinstance(usage, dict):
                        stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                        stats.generated_tokens = int(usage.get("completion_tokens") or counted)
                        details = usage.get("completion_tokens_details") or {}
                        if isinstance(details, dict):
                            accepted = int(details.get("accepted_prediction_tokens") or 0)
                            rejected = int(details.get("rejected_prediction_tokens") or 0)
                            stats.accepted_tokens, stats.drafted_tokens = accepted, accepted + rejected
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
            if retry:
                stats.stop_reason = StopReason.PENDING
            if not stats.generated_tokens:
                stats.generated_tokens = counted
            if finish is not None:
                stats.stop_reason = StopReason.LENGTH if finish == "length" else StopReason.STOP
        if retry:
            self.prediction_supported = False
            plain = {k: v for k, v in body.items() if k != "prediction"}
            yield from self._stream(route, plain, stats, stops, cancel)
            return
        if not stop_filter.stopped:
            tail = stop_filter.flush()
            if tail:
                yield tail
