"""The decode loop of one local reply: read the prompt, take tokens from a source, stop, stream text.

    job = Reply(tokens, params, stats, started, Stopping(stop_ids, texts, strip_newline), cancel, record)
    for text in run_reply(backend, job, source_for): ...

``source_for(chain)`` gives the tokens (plain, or drafted: speculative/decoding.py) once the
prompt is in the context. Stops: control tokens by id (they detokenize to nothing) and
plain-text stops cut out of the stream (StopTextFilter). The stats fill as it goes; the context
keeps only the prompt and the reply's tokens (accepted drafts after a stop are cut).
"""

from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from starchat_cli.engine.contract import Stats, StopReason, TokenLogprob
from starchat_cli.engine.llamacpp.backend import LlamaCppBackend
from starchat_cli.engine.llamacpp.kv_state import PromptAborted
from starchat_cli.engine.llamacpp.sampler import token_logprob
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.stops import StopTextFilter


@dataclass(frozen=True)
class Stopping:
    """Where a reply ends: these token ids (besides end-of-generation ones), these texts; and
    whether its first newline is dropped (a chat format that opens the reply with one)."""

    stop_ids: frozenset[int]
    texts: tuple[str, ...]
    strip_newline: bool = False


@dataclass
class Reply:
    """One reply to run: its prompt tokens, sampling, stats to fill, clock start, stops, cancel
    event, and where per-token logprobs go (``params.logprobs`` set)."""

    tokens: list[int]
    params: GenerationParams
    stats: Stats
    started: float
    stopping: Stopping
    cancel: threading.Event | None = None
    record: list[TokenLogprob] | None = None


def run_reply(backend: LlamaCppBackend, job: Reply, source_for: Callable[[Any], Any]) -> Iterator[str]:
    """The reply's text, chunk by chunk, under the backend's lock."""
    stats, params, tokens = job.stats, job.params, job.tokens
    top = params.logprobs if job.record is not None else None
    stop_ids, strip_newline = job.stopping.stop_ids, job.stopping.strip_newline
    stop_filter = StopTextFilter(job.stopping.texts)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    limit = params.max_tokens
    with backend.lock:
        chain = backend.make_sampler(params, tokens)
        try:
            t0 = time.perf_counter()
            try:
                stats.cached_tokens, stats.cached_from = backend.eval_prompt(tokens, abort=job.cancel)
            except PromptAborted:
                stats.stop_reason = StopReason.CANCELLED
                return
            stats.prompt_seconds = time.perf_counter() - t0
            source = source_for(chain)
            first_at = 0.0
            for token, drafted in source:
                now = time.perf_counter()
                if stats.generated_tokens == 0:
                    first_at = now
                    stats.ttft_seconds = now - job.started
                if token in stop_ids or backend.is_eog(token):
                    stats.stop_reason = StopReason.STOP
                    break
                stats.generated_tokens += 1
                if top is not None and job.record is not None:  # plain decoding: these logits chose it
                    job.record.append(token_logprob(backend.last_logits(), token, top, backend.piece))
                stats.accepted_tokens += drafted
                stats.decode_seconds = now - first_at  # spans generated_tokens - 1 decode steps
                text = decoder.decode(backend.piece(token))
                if strip_newline and text:
                    if text.startswith("\n"):
                        text = text[1:]
                    strip_newline = not text
                if text:
                    out = stop_filter.feed(text)
                    if out:
                        yield out
                    if stop_filter.stopped:
                        stats.stop_reason = StopReason.STOP
                        break
                if limit is not None and stats.generated_tokens >= limit:
                    stats.stop_reason = StopReason.LENGTH
                    break
            source.close()
            # accepted drafts after a stop were evaluated: keep only the reply's tokens
            backend.truncate(len(tokens) + stats.generated_tokens)
            if not stop_filter.stopped:
                tail = stop_filter.feed(decoder.decode(b"", final=True)) + stop_filter.flush()
                if tail:
                    yield tail
        finally:
            backend.free_sampler(chain)
            stats.context_tokens = min(backend.n_past, len(tokens) + stats.generated_tokens)
            if not stats.stop_reason:
                stats.stop_reason = StopReason.CANCELLED


__all__ = ["Reply", "Stopping", "run_reply"]
