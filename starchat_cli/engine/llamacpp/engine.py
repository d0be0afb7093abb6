"""The local engine: a llama.cpp model with its prompt format, implementing the Engine contract.

    engine = LocalEngine(LlamaCppBackend(path, options), prompt_format, default_system, name="starchat2")

The model is loaded on first use and reused; consecutive calls reuse the KV cache for
the shared prompt prefix. Stops: control tokens by id (never by text, since control
tokens detokenize to nothing), plus plain-text stops cut out of the stream.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator, Sequence

from starchat_cli.core.errors import ContextOverflowError, InputError
from starchat_cli.engine.contract import EngineInfo, Generation, Stats, TokenLogprob
from starchat_cli.engine.llamacpp.auto_curve import AutoCurve
from starchat_cli.engine.llamacpp.backend import LlamaCppBackend
from starchat_cli.engine.llamacpp.file_format import format_for_backend
from starchat_cli.engine.llamacpp.reply import Reply, Stopping, run_reply
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.attachment import Attachment
from starchat_cli.engine.prompting.fim import FimVocab, build_fim_prompt, fim_vocab
from starchat_cli.engine.prompting.fit import FitResult, fit_prompt
from starchat_cli.engine.prompting.formats import Message, PromptFormat
from starchat_cli.engine.prompting.stops import without_trailing_whitespace
from starchat_cli.engine.speculative.calibrate import CurveCache
from starchat_cli.engine.speculative.decoding import DraftRequest, drafted_source, plain_source
from starchat_cli.engine.speculative.exact_batches import ExactBatches
from starchat_cli.engine.speculative.policy import DraftPolicy

# -- the engine ---------------------------------------------------------------------------


class LocalEngine:
    """A llama.cpp model (backend) with its prompt format: renders, fits, generates and stops."""

    def __init__(
        self,
        backend: LlamaCppBackend,
        prompt_format: PromptFormat | None = None,
        default_system: str | None = None,
        forced_format: str | None = None,
        *,
        name: str = "",
        aliases: Sequence[str] = (),
        curve_cache: CurveCache | None = None,
    ) -> None:
        """``curve_cache``: where --draft auto keeps its batch-cost curves (None: the cache dir's)."""
        self.backend = backend
        self._format = prompt_format
        self._forced_format = forced_format
        self.default_system = default_system
        self.name = name or backend.path.stem
        self.aliases = tuple(aliases)
        self._stop_ids: frozenset[int] | None = None
        self._extra_stop_texts: tuple[str, ...] = ()
        self._fim: FimVocab | None = None
        self.auto_curve = AutoCurve(backend, curve_cache)  # --draft auto's batch costs (background)
        self._exact: ExactBatches | None = None

    @property
    def info(self) -> EngineInfo:
        backend = self.backend
        loaded = backend.loaded
        fmt = self._format.name if self._format is not None else ""
        return EngineInfo(
            name=self.name,
            location=str(backend.path),
            loaded=loaded,
            n_ctx=backend.n_ctx if loaded else 0,
            prompt_format=fmt,
            flash_attn=backend.flash_attn,
            placement=backend.gpu.reason,
            default_system=self.default_system,
            warnings=tuple(backend.warnings),
            notes=tuple(backend.cache.notes) if backend.cache is not None else (),
            aliases=self.aliases,
            cpu_kernels=backend.amx.describe() if backend.amx is not None else "",
        )

    def persist(self) -> None:
        """Save the prompt state to the prompt cache now (the faces call this once the user has the answer)."""
        with self.backend.lock:
            self.backend.persist()

    def close(self) -> None:
        with self.backend.lock:
            self.backend.unload()

    def load(self) -> EngineInfo:
        self.backend.load()
        self.prompt_format  # noqa: B018 - a file's own template is read (and checked) at load
        return self.info

    @property
    def prompt_format(self) -> PromptFormat:
        if self._format is None:
            self._format = format_for_backend(self.backend, self._forced_format)
        return self._format

    def _stops(self) -> tuple[frozenset[int], tuple[str, ...]]:
        if self._stop_ids is None:
            fmt = self.prompt_format
            ids = set()
            texts = list(fmt.stop_texts)
            for text in fmt.stop_tokens:
                tok = self.backend.special_token_id(text)
                if tok is None:
                    texts.append(text)  # not a special token here: match it as text
                else:
                    ids.add(tok)
            for text in fmt.turn_tokens:  # a turn opener ends the reply too (by id only)
                tok = self.backend.special_token_id(text)
                if tok is not None:
                    ids.add(tok)
            eos = self.backend.eos_id
            if eos >= 0:
                ids.add(eos)
            self._stop_ids = frozenset(ids)
            self._extra_stop_texts = tuple(texts)
        return self._stop_ids, self._extra_stop_texts

    def build_messages(self, turns: Sequence[Message], system: str | None) -> list[Message]:
        chosen = self.default_system if system is None else system
        msgs = list(turns)
        if chosen or (chosen == "" and self.prompt_format.empty_system_block):
            msgs.insert(0, Message("system", chosen))
        return msgs

    def count_tokens(self, messages: Sequence[Message]) -> int:
        fmt = self.prompt_format  # an empty system prompt: its block only where generate renders one
        kept = [m for m in messages if m.role != "system" or m.content or fmt.empty_system_block]
        return len(self.render_tokens(kept))

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return self.backend.tokenize(text, add_bos=add_special, special=parse_special)

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes]:
        n_vocab = self.backend.n_vocab
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InputError(f"token id {bad} is not in the vocabulary (0 to {n_vocab - 1})")
        return [self.backend.piece(t, special=True) for t in tokens]

    def render_tokens(self, messages: Sequence[Message]) -> list[int]:
        text = self.prompt_format.prompt(messages)
        add_bos = self.backend.add_bos
        bos = self.backend.bos_id
        tokens = self.backend.tokenize(text)
        if add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def generate(
        self,
        turns: Sequence[Message],
        params: GenerationParams | None = None,
        *,
        system: str | None = None,
        attachment: Attachment | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Start generating a reply to ``turns`` (user/assistant, system notes among them).

        Turns ending with an assistant turn are a prefill: the reply continues it (and holds
        only the continuation; see formats.py). ``attachment``: long input (piped text) that may be cut from the front to fit;
        ``attachment.turn(kept_text)`` is then the last user message's content.
        ``cancel``: an event any thread may set to stop the generation, even in the
        middle of a long prompt evaluation (stop reason CANCELLED).
        """
        params = params or GenerationParams()
        started, stats, n_ctx = self._begin()
        reserve = _reserve(n_ctx, params.max_tokens)
        fit = fit_prompt(
            lambda msgs: self.render_tokens(msgs),
            self.build_messages,
            list(turns),
            system,
            n_ctx - reserve,
            attachment=attachment.text if attachment is not None else None,
            attach=attachment.turn if attachment is not None else None,
        )
        stats.prompt_tokens = len(fit.tokens)
        stats.dropped_turns = fit.dropped_turns
        stats.truncated_chars = fit.truncated_chars
        # A prefill's continuation keeps its first newline: the prefilled text already began the reply.
        prefilled = bool(turns) and turns[-1].role == "assistant" and bool(turns[-1].content)
        record: list[TokenLogprob] = []
        chunks = self._run(
            fit.tokens, params, stats, started, n_ctx, cancel=cancel, record=record, continues=prefilled
        )
        if self.prompt_format.strip_trailing_whitespace:
            chunks = without_trailing_whitespace(chunks)
        prompt_text = self.prompt_format.prompt(fit.messages)
        return Generation(chunks, stats, fit, prompt_text=prompt_text, logprobs=record)

    def _begin(self) -> tuple[float, Stats, int]:
        """Start a request: the clock, the model loaded, fresh stats, the context size."""
        started = time.perf_counter()
        self.backend.load()
        n_ctx = self.backend.n_ctx
        return started, Stats(load_seconds=self.backend.take_load_seconds(), n_ctx=n_ctx), n_ctx

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Continue raw ``prompt`` text (no chat template): the /v1/completions path.

        ``prompt`` may be token ids: evaluated as given (no BOS added), each checked against
        the vocabulary. Stops at end-of-generation tokens, ``params.stop`` and ``max_tokens``;
        a prompt that leaves no room in the context is a :class:`ContextOverflowError`.
        """
        params = params or GenerationParams()
        started, stats, n_ctx = self._begin()
        if isinstance(prompt, str):
            tokens = self.backend.tokenize(prompt)
            bos = self.backend.bos_id
            if self.backend.add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
                tokens.insert(0, bos)
        else:
            tokens = self._checked_ids(prompt)
        if not tokens:
            raise InputError("the prompt is empty")
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt needs {len(tokens)} tokens but the context holds {n_ctx}: shorten it or raise --ctx"
            )
        stats.prompt_tokens = len(tokens)
        record: list[TokenLogprob] = []
        chunks = self._run(tokens, params, stats, started, n_ctx, chat=False, cancel=cancel, record=record)
        return Generation(chunks, stats, FitResult(tokens, []), logprobs=record)

    def _checked_ids(self, ids: Sequence[int]) -> list[int]:
        """Token ids from a client, each inside the vocabulary (llama.cpp would crash on one past it)."""
        n_vocab = self.backend.n_vocab
        for i, tok in enumerate(ids):
            if not 0 <= tok < n_vocab:
                raise InputError(f"prompt token {i} is {tok}, outside the vocabulary (0 to {n_vocab - 1})")
        return list(ids)

    def fim_vocab(self) -> FimVocab:
        """The model's FIM token ids (FimUnsupportedError when it has none)."""
        if self._fim is None:
            b = self.backend
            self._fim = fim_vocab(
                b.special_token_id, eos=b.eos_id, bos=b.bos_id, add_bos=b.add_bos, model=self.name
            )
        return self._fim

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
        """The middle between ``prefix`` and ``suffix`` in the model's FIM format (engine/prompting/fim.py).

        ``repo``: the repository's name, for StarCoder2's repository layout. Stops at end of
        text and the FIM tokens, ``params.stop`` and ``max_tokens``; the prompt in memory is
        reused as a KV prefix by the next request but never written to the prompt cache.
        """
        params = params or GenerationParams()
        started, stats, n_ctx = self._begin()
        vocab = self.fim_vocab()
        backend = self.backend
        prompt = build_fim_prompt(
            vocab,
            lambda text: backend.tokenize(text, special=False),
            backend.detokenize,
            prefix,
            suffix,
            n_ctx - _reserve(n_ctx, params.max_tokens),
            extra=extra,
            path=path,
            repo=repo,
        )
        stats.prompt_tokens = len(prompt.tokens)
        stats.truncated_chars = max(0, prompt.cut_chars)
        stop_ids = vocab.stop_ids | ({backend.eos_id} if backend.eos_id >= 0 else set())
        record: list[TokenLogprob] = []
        chunks = self._run(prompt.tokens, params, stats, started, n_ctx, False, cancel, stop_ids, record)

        def run() -> Iterator[str]:
            try:
                yield from chunks
            finally:
                with backend.lock:
                    backend.skip_persist()

        fit = FitResult(prompt.tokens, [])
        return Generation(run(), stats, fit, prompt_text=prompt.text, logprobs=record)

    def _run(
        self,
        tokens: list[int],
        params: GenerationParams,
        stats: Stats,
        started: float,
        n_ctx: int,
        chat: bool = True,
        cancel: threading.Event | None = None,
        stop_ids: frozenset[int] | None = None,
        record: list[TokenLogprob] | None = None,
        continues: bool = False,
    ) -> Iterator[str]:
        """The reply to ``tokens`` (reply.py's loop) with this model's stops; with ``params.logprobs``
        each counted token's entry goes to ``record``."""
        if stop_ids is None:
            stop_ids, extra_texts = self._stops()
            strip_newline = self.prompt_format.strip_leading_newline and chat and not continues
        else:  # infill: its own stop ids, no chat format involved
            extra_texts, strip_newline = (), False
        texts = (*extra_texts, *params.stop) if chat else tuple(params.stop)
        stopping = Stopping(stop_ids, texts, strip_newline)
        job = Reply(tokens, params, stats, started, stopping, cancel, record)
        return run_reply(
            self.backend, job, lambda chain: self._source(tokens, params, stats, n_ctx, chain, cancel)
        )

    def _source(self, tokens, params, stats, n_ctx, chain, cancel):
        """The decode loop's token source for ``params.draft`` (see speculative/decoding.py)."""
        backend = self.backend
        mode = "off" if params.plain_decoding else params.draft  # see GenerationParams.plain_decoding
        if mode == "off":
            return plain_source(backend, chain, stats, n_ctx, cancel)
        curve = None
        if mode == "auto":
            curve = self.auto_curve.ready()
            if curve is None:  # measured once this reply is over: never inside a request
                self.auto_curve.measure_later(tokens)
                return plain_source(backend, chain, stats, n_ctx, cancel)
        prediction = backend.tokenize(params.prediction) if params.prediction else []
        request = DraftRequest(
            params=params,
            prompt=tokens,
            prediction=prediction,
            policy=DraftPolicy(mode, curve),
            n_ctx=n_ctx,
            chain=chain,
            exact=self._exact_batches(),
            cancel=cancel,
        )
        return drafted_source(backend, request, stats)

    def _exact_batches(self) -> ExactBatches:
        """Where drafted batches are exact, learnt once per loaded model (speculative/exact_batches.py)."""
        if self._exact is None or self._exact.decoder is not self.backend:
            self._exact = ExactBatches(self.backend)
        return self._exact


def _reserve(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply when fitting the prompt."""
    if max_tokens is not None:
        return min(max_tokens, n_ctx // 2)
    return min(1024, n_ctx // 4)


__all__ = ["LocalEngine"]
