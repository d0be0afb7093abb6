"""The Engine contract: what every backend implements and every face (ask, chat, serve) uses.

    engine = runtime.open_engine(settings, explicit).engine   # an Engine
    info = engine.load()                  # ready to generate: EngineInfo (n_ctx, format, plan, ...)
    gen = engine.generate(turns, params, system=..., cancel=event)
    for text in gen:                      # text chunks as they are decoded
        ...
    gen.stats                             # prompt/generated tokens, time to first token, stop reason
    if gen.stats.stop_reason is StopReason.LENGTH: ...   # faces compare; only engines write it
    gen = engine.infill(prefix, suffix, params, extra=[(path, text)], path="src/app.py")
    gen.prompt_text                       # the prompt (chat or FIM) with its special tokens written out
    gen.take_logprobs()                   # params.logprobs set: TokenLogprobs of the tokens since the last take
    engine.count_tokens(messages)         # the prompt's tokens in the model's tokenizer, None: unknown
    engine.tokenize("def f():")           # token ids (None: the engine cannot say, a remote server)
    engine.token_pieces([755, 282])       # each token's bytes, special tokens written out

Backends: :class:`~starchat_cli.engine.llamacpp.engine.LocalEngine` (llama.cpp) and
:class:`~starchat_cli.engine.remote.engine.RemoteEngine` (an OpenAI-compatible server); the
tests' fake engine implements it too. Faces read :attr:`Engine.info`, never a backend.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Iterator, Protocol, Sequence, runtime_checkable

from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.attachment import Attachment
from starchat_cli.engine.prompting.fit import FitResult
from starchat_cli.engine.prompting.formats import Message


class StopReason(str, Enum):
    """Why a generation ended, written by the engine (and by :meth:`Generation.close`).

    str-valued, so JSON output, saved sessions and the server's finish reasons carry the same
    strings as ever: ``StopReason.LENGTH == "length"`` and ``f"{StopReason.LENGTH}"`` is ``length``.
    """

    PENDING = ""  # not ended yet
    STOP = "stop"  # the model ended its reply: an end-of-generation token or a stop text
    LENGTH = "length"  # max_tokens, or a limit of the consumer's own (see Generation.close)
    CONTEXT = "context"  # the context window is full
    CANCELLED = "cancelled"  # cancelled, or closed before it ended

    def __str__(self) -> str:
        return str(self.value)


class CacheSource(str, Enum):
    """Where a generation's reused prompt tokens came from (str-valued, as StopReason)."""

    NONE = ""  # nothing reused
    MEMORY = "memory"  # the sequence this process holds
    DISK = "disk"  # a saved state from the prompt cache

    def __str__(self) -> str:
        return str(self.value)


@dataclass
class Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache
    cached_from: CacheSource = CacheSource.NONE  # where they came from
    generated_tokens: int = 0
    load_seconds: float = 0.0
    prompt_seconds: float = 0.0  # evaluating the (uncached part of the) prompt
    ttft_seconds: float = 0.0  # request start to first generated token
    decode_seconds: float = 0.0  # first generated token to the last
    stop_reason: StopReason = StopReason.PENDING
    n_ctx: int = 0
    dropped_turns: int = 0
    truncated_chars: int = 0
    drafted_tokens: int = 0  # tokens proposed by drafting from the context
    accepted_tokens: int = 0  # drafted tokens the model confirmed (kept in the reply)
    decode_steps: int = 0  # forward passes while decoding (one per token without drafts)
    draft_stopped_at: int = 0  # context position from which a batch would not equal one-token steps here
    # Tokens in the model's context when the reply ended: the prompt and the reply tokens fed
    # back to the model (the last one sampled is not, unless decoding went on); 0: not known.
    # llama.cpp's server reports this as ``tokens_cached``.
    context_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Decode speed, excluding the first token (which pays for the prompt)."""
        if self.generated_tokens > 1 and self.decode_seconds > 0:
            return (self.generated_tokens - 1) / self.decode_seconds
        return 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = asdict(self)
        out["stop_reason"] = str(self.stop_reason)  # plain strings, for any serializer
        out["cached_from"] = str(self.cached_from)
        out["tokens_per_second"] = round(self.tokens_per_second, 2)
        out["prompt_tokens_per_second"] = round(self.prompt_tokens_per_second, 2)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        return out


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as OpenAI's logprobs report it: its text, its UTF-8 bytes (a token may
    hold part of a character), its log-probability under the model, and the most likely
    alternatives at its position (``top``: entries without alternatives of their own)."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TokenLogprob, ...] = ()
    id: int = -1  # the token's id in the model's vocabulary (llama.cpp's n_probs reports it)


class Generation:
    """An iterator of text chunks; ``stats`` and ``text`` are complete once it is exhausted.

    ``close()`` (or breaking out of the loop and closing) cancels the generation; the
    stop reason is then CANCELLED. ``fit`` says what the prompt became (tokens, the
    messages kept, how much of an attachment was cut). ``prompt_text``: the prompt as
    text with its special tokens written out, where the engine knows it (a local model's
    chat or infill prompt), else "".
    ``logprobs``: with ``params.logprobs`` set, one :class:`TokenLogprob` per generated token,
    appended by the engine as it goes (a text chunk's tokens are in before the chunk is yielded);
    :meth:`take_logprobs` hands out the entries not taken yet, for a stream.
    """

    def __init__(
        self,
        chunks: Iterator[str],
        stats: Stats,
        fit: FitResult | None = None,
        *,
        prompt_text: str = "",
        logprobs: list[TokenLogprob] | None = None,
    ) -> None:
        self._chunks = chunks
        self.stats = stats
        self.fit = fit if fit is not None else FitResult(tokens=[], messages=[])
        self.prompt_text = prompt_text
        self.logprobs: list[TokenLogprob] = logprobs if logprobs is not None else []
        self._taken = 0
        self._parts: list[str] = []

    def take_logprobs(self) -> list[TokenLogprob]:
        """The logprob entries added since the last call (all of them, the first time)."""
        new = self.logprobs[self._taken :]
        self._taken += len(new)
        return new

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        chunk = next(self._chunks)
        self._parts.append(chunk)
        return chunk

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def close(self, reason: StopReason | None = None) -> None:
        """Stop generating. ``reason``: why the consumer stopped taking chunks, recorded over what
        the engine wrote (it has all it needs: STOP; a limit of its own: LENGTH); without one a
        generation that had not ended is CANCELLED."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if reason is not None:
            self.stats.stop_reason = reason
        elif not self.stats.stop_reason:
            self.stats.stop_reason = StopReason.CANCELLED


@dataclass(frozen=True)
class EngineInfo:
    """What a face may know about an engine: a snapshot, complete once ``load()`` returned."""

    name: str  # the model as the user knows it ("" for a server whose model is not known yet)
    location: str  # a model file's path, or a server's API base URL
    remote: bool = False
    loaded: bool = False
    n_ctx: int = 0  # 0: unknown (not loaded yet, or the server fits the prompt)
    prompt_format: str = ""  # the prompt format's name ("remote": the server applies it)
    flash_attn: bool = False
    placement: str = ""  # where the model runs: the GPU offload plan in words, or "remote server"
    default_system: str | None = None  # the system prompt used when none is given
    warnings: tuple[str, ...] = ()  # things the user must hear (out-of-memory retries, ...)
    notes: tuple[str, ...] = ()  # things said only when asked (-v): e.g. a damaged cache file removed
    aliases: tuple[str, ...] = ()  # other names a request may use for this model (serve)
    cpu_kernels: str = ""  # local models: what was done about Intel AMX, one line (for -v)


@runtime_checkable
class Engine(Protocol):
    """A model that generates: local, remote or fake, the faces cannot tell."""

    @property
    def info(self) -> EngineInfo:
        """A snapshot of what the engine is now (cheap: never loads or calls out)."""
        ...

    def load(self) -> EngineInfo:
        """Make the engine ready (load the model, ask the server its model); idempotent."""
        ...

    def close(self) -> None:
        """Let go of the model: free a local one's memory, leave a worker (it stays for its keep-alive,
        for the next call). Idempotent; the engine loads again if used afterwards."""
        ...

    def persist(self) -> None:
        """Keep what is worth keeping (the prompt cache) now: a face calls it once the user has
        the answer, so the write never delays the text. Idempotent; a no-op where nothing is kept."""
        ...

    def generate(
        self,
        turns: Sequence[Message],
        params: GenerationParams | None = None,
        *,
        system: str | None = None,
        attachment: Attachment | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """A reply to ``turns`` in the model's format: user/assistant turns starting with a user
        turn, ending with a user turn, or with an assistant turn the reply continues (a prefill:
        the reply holds only the continuation); system messages among them are notes the
        prompt format places (engine/prompting/formats.py).

        ``system``: None for the model's default system prompt. ``attachment``: long input
        (piped text) that may be cut from the front to fit; ``attachment.turn(kept_text)`` is
        then the last user message's content. ``cancel``: an event any thread may set to
        stop, even during a long prompt evaluation.
        """
        ...

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """A raw continuation of ``prompt`` (no chat template): the /v1/completions path.

        ``prompt``: text, or token ids evaluated as given (an id outside the vocabulary is an
        :class:`~starchat_cli.core.errors.InputError`)."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        """Tokens of ``messages`` rendered as a prompt in the model's format and tokenizer: exactly
        these (a system message only if one is given; an empty one counts as ``generate`` sends
        it). None where the engine cannot count them (a remote server): estimate instead."""
        ...

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = True
    ) -> list[int] | None:
        """``text`` as token ids in the model's tokenizer (llama.cpp's ``/tokenize``): ``add_special``
        adds the BOS token where the model's vocabulary asks for one; ``parse_special=False`` reads
        special-token text such as ``<|im_end|>`` as plain text. None where the engine cannot
        tokenize (a remote server)."""
        ...

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes] | None:
        """Each token's bytes, special tokens written out; joined, the text llama.cpp's
        ``/detokenize`` answers (a piece may be part of a UTF-8 character). An id outside the
        vocabulary is an :class:`~starchat_cli.core.errors.InputError`. None where the engine
        cannot say (a remote server)."""
        ...

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
        """The middle between ``prefix`` and ``suffix`` (fill-in-the-middle): /infill, ``complete``.

        ``extra``: other files as (path, text), repository context where the model has it;
        ``path``: the current file's path; ``repo``: the repository's name (StarCoder2's
        repository layout). Where the API has no place for them they are not sent. A model
        without FIM tokens raises
        :class:`~starchat_cli.core.errors.FimUnsupportedError`.
        """
        ...


__all__ = [
    "CacheSource",
    "Engine",
    "EngineInfo",
    "Generation",
    "Stats",
    "StopReason",
    "TokenLogprob",
]
