"""The generation engine: one streaming API that every face (ask, chat, serve) uses.

    engine = Engine(LlamaCppBackend(path, options), prompt_format, default_system)
    gen = engine.generate(messages, params)
    for text in gen:          # text chunks as they are decoded
        ...
    gen.stats                 # prompt/generated tokens, time to first token, tokens/s, stop reason

The llama.cpp model is loaded on first use and reused; consecutive calls reuse the KV
cache for the shared prompt prefix. Stops: control tokens by id (never by text, since
control tokens detokenize to nothing), plus plain-text stops cut out of the stream.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .errors import ContextOverflowError, InputError, ModelLoadError, StarchatError
from .fit import FitResult, fit_prompt
from .prompts import JinjaFormat, Message, PromptFormat, get_format
from .stops import StopTextFilter


def default_threads() -> int:
    """Threads for decoding: every usable core on small machines, half (physical) on big ones."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return cpus if cpus <= 4 else max(4, cpus // 2)


@dataclass
class LoadOptions:
    n_ctx: int = 4096
    n_threads: int | None = None
    gpu: str | int = "auto"  # "auto" (planned), "off", or a number of layers
    n_batch: int = 512
    seed: int = 0xFFFFFFFF  # llama.cpp's "random"
    # Flash attention is 7-10% faster decoding on CPU (benchmarks/decode.py); llama-cpp-python
    # only offers on/off, so "on" is tried first and "off" is the fallback when the
    # backend cannot create such a context.
    flash_attn: bool = True


@dataclass
class GenerationParams:
    max_tokens: int | None = None
    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()  # extra plain-text stops (e.g. an API request's "stop")


@dataclass
class Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache
    generated_tokens: int = 0
    load_seconds: float = 0.0
    prompt_seconds: float = 0.0  # evaluating the (uncached part of the) prompt
    ttft_seconds: float = 0.0  # request start to first generated token
    decode_seconds: float = 0.0  # first generated token to the last
    stop_reason: str = ""  # stop | length | context | cancelled
    n_ctx: int = 0
    dropped_turns: int = 0
    truncated_chars: int = 0

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
        out["tokens_per_second"] = round(self.tokens_per_second, 2)
        out["prompt_tokens_per_second"] = round(self.prompt_tokens_per_second, 2)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        return out


class Generation:
    """An iterator of text chunks; ``stats`` and ``text`` are complete once it is exhausted.

    ``close()`` (or breaking out of the loop and closing) cancels the generation; the
    stop reason is then "cancelled".
    """

    def __init__(self, chunks: Iterator[str], stats: Stats, fit: FitResult) -> None:
        self._chunks = chunks
        self.stats = stats
        self.fit = fit
        self._parts: list[str] = []

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        chunk = next(self._chunks)
        self._parts.append(chunk)
        return chunk

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if not self.stats.stop_reason:
            self.stats.stop_reason = "cancelled"


# -- llama.cpp -------------------------------------------------------------------------

_LOG_LINES: deque[str] = deque(maxlen=50)
_log_callback = None


def _install_log_capture() -> None:
    """Route llama.cpp's log to a buffer: errors are summarised in one line, not dumped."""
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace").strip()
        if line:
            _LOG_LINES.append(line)
        if os.environ.get("STARCHAT_LLAMA_LOG"):
            os.write(2, text)

    _log_callback = capture  # keep a reference: ctypes callbacks must outlive their use
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))


def _last_llama_error() -> str:
    for line in reversed(_LOG_LINES):
        low = line.lower()
        if "error" in low or "failed" in low or "invalid" in low:
            return line
    return ""


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclass
class GpuChoice:
    n_gpu_layers: int  # llama.cpp's value: -1 all, 0 none, N blocks (+1 = output too)
    plan: object | None = None  # offload.OffloadPlan when planned from free memory
    reason: str = ""
    hint: str | None = None  # e.g. "this machine has an NVIDIA GPU but the build is CPU-only: ..."


def choose_gpu_layers(setting: str | int, info, n_ctx: int) -> GpuChoice:  # info: GGUFInfo
    """``off``/0: CPU only; N: N layers; ``auto``: plan from the GPUs' free memory.

    ``auto`` with a CPU-only build is 0; with an offload build but no way to read free
    memory (no NVML, no nvidia-smi: ROCm, Vulkan, ...) it is every layer, and an
    out-of-memory load falls back to fewer (see ``LlamaCppBackend.load``).
    """
    if setting in ("off", 0, "0"):
        return GpuChoice(0, None, "GPU off")
    if setting != "auto":
        return GpuChoice(int(setting), None, f"{setting} layers requested")
    from .hardware import build_info, build_mismatch, detect_gpus
    from .offload import ModelShape, plan_offload

    build = build_info()
    gpus = detect_gpus()
    if not build.gpu_offload:
        return GpuChoice(0, None, "this llama.cpp build has no GPU offload", build_mismatch(build, gpus))
    if not gpus:
        return GpuChoice(-1, None, "offloading every layer (free GPU memory unknown)")
    plan = plan_offload(
        ModelShape.from_gguf(info),
        n_ctx,
        sum(g.free_bytes for g in gpus),
        device=gpus[0].name if len(gpus) == 1 else f"{len(gpus)} GPUs",
        n_devices=len(gpus),
    )
    return GpuChoice(plan.n_gpu_layers, plan, plan.describe())


class LlamaCppBackend:
    """A local GGUF model run by llama-cpp-python, loaded on first use."""

    def __init__(self, path: Path, options: LoadOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or LoadOptions()
        self._llm = None
        self._vocab = None
        self._piece_buf = ctypes.create_string_buffer(256)
        self.load_seconds = 0.0
        self._unreported_load = 0.0
        self.lock = threading.Lock()
        self.gpu: GpuChoice = GpuChoice(0)
        self.trained_ctx = 0
        self.flash_attn = False
        self.warnings: list[str] = []  # things the user must hear (out-of-memory retries, ...)

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def take_load_seconds(self) -> float:
        """The load time, reported once: by the first generation after the load."""
        seconds, self._unreported_load = self._unreported_load, 0.0
        return seconds

    def load(self):  # -> llama_cpp.Llama
        if self._llm is not None:
            return self._llm
        from .gguf_info import read_gguf_info

        info = read_gguf_info(self.path)  # clear errors for missing/corrupt files first
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StarchatError(
                f"llama-cpp-python is not installed or failed to import ({exc}): pip install llama-cpp-python"
            ) from None
        _install_log_capture()
        self.trained_ctx = info.context_length or 0
        n_ctx = self.options.n_ctx
        if self.trained_ctx and n_ctx > self.trained_ctx:
            n_ctx = self.trained_ctx
        self.gpu = choose_gpu_layers(self.options.gpu, info, n_ctx)
        if self.gpu.hint:
            from .hardware import hint_once

            if hint_once("cpu-only-build"):
                self.warnings.append(self.gpu.hint)
        started = time.perf_counter()
        kwargs = dict(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_batch=min(self.options.n_batch, n_ctx),
            n_threads=self.options.n_threads or default_threads(),
            n_gpu_layers=self.gpu.n_gpu_layers,
            seed=self.options.seed,
            flash_attn=self.options.flash_attn,
            verbose=False,
        )
        llm = self._load_with_fallbacks(llama_cpp.Llama, kwargs, info.block_count or 0)
        self.flash_attn = bool(kwargs["flash_attn"])
        self.load_seconds = self._unreported_load = time.perf_counter() - started
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        return llm

    def _load_with_fallbacks(self, factory, kwargs: dict, n_layers: int):
        """Create the llama.cpp model; on failure retry without flash attention, then with
        fewer GPU layers (out of memory), before giving up with a one-line error."""
        from .offload import fewer_layers

        while True:
            _LOG_LINES.clear()
            try:
                return factory(**kwargs)
            except (ValueError, RuntimeError, OSError) as exc:
                detail = _last_llama_error() or str(exc)
                is_context = "context" in str(exc).lower()
                if is_context and kwargs["flash_attn"]:
                    kwargs["flash_attn"] = False
                    continue
                layers = kwargs["n_gpu_layers"]
                if layers != 0 and gpu_offload_supported():
                    smaller = fewer_layers(layers, n_layers)
                    shown = "all" if layers < 0 else str(layers)
                    self.warnings.append(
                        f"loading with {shown} GPU layers failed ({detail}): retried with {smaller}"
                    )
                    kwargs["n_gpu_layers"] = smaller
                    self.gpu = GpuChoice(smaller, None, f"{smaller} layers after an out-of-memory retry")
                    kwargs["flash_attn"] = self.options.flash_attn
                    continue
                if is_context:
                    raise ModelLoadError(
                        f"cannot create a {kwargs['n_ctx']}-token context for {self.path.name} ({detail}): "
                        "try a smaller --ctx"
                    ) from None
                raise ModelLoadError(
                    f"cannot load {self.path}: {detail}; the file may be truncated or corrupt, "
                    "or need a newer llama-cpp-python (re-download or re-convert it)"
                ) from None

    # -- vocabulary ----------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.load().n_ctx()

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        return self.load().tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def piece(self, token: int, special: bool = False) -> bytes:
        import llama_cpp

        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def special_token_id(self, text: str) -> int | None:
        """The id of a special token such as ``<|im_end|>``, or None if the vocab lacks it."""
        ids = self.tokenize(text)
        if len(ids) == 1 and self.piece(ids[0], special=True).decode("utf-8", "replace") == text:
            return ids[0]
        return None

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def token_text(self, token: int) -> str:
        return self.piece(token, special=True).decode("utf-8", "replace")

    @property
    def bos_id(self) -> int:
        return self.load().token_bos()

    @property
    def eos_id(self) -> int:
        return self.load().token_eos()

    @property
    def add_bos(self) -> bool:
        import llama_cpp

        self.load()
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    def metadata(self) -> dict[str, str]:
        return dict(self.load().metadata)

    # -- decoding ------------------------------------------------------------------
    def eval_prompt(self, tokens: Sequence[int], abort: threading.Event | None = None) -> int:
        """Evaluate the prompt, reusing the cached prefix; returns how many tokens were reused.

        With ``abort``, setting that event from any thread interrupts the evaluation
        inside llama.cpp (its abort callback) and raises :class:`PromptAborted`; the
        callback is installed only for the prompt, so decoding pays nothing for it.
        """
        llm = self.load()
        cached = list(llm._input_ids[: llm.n_tokens]) if llm.n_tokens else []
        prefix = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            prefix += 1
        prefix = min(prefix, len(tokens) - 1)  # always evaluate one token to get logits
        llm.n_tokens = prefix
        if abort is None:
            llm.eval(tokens[prefix:])
            return prefix
        import llama_cpp

        callback = llama_cpp.ggml_abort_callback(lambda _data: abort.is_set())
        llama_cpp.llama_set_abort_callback(llm.ctx, callback, None)
        try:
            llm.eval(tokens[prefix:])
        except RuntimeError:
            if abort.is_set():
                raise PromptAborted() from None
            raise
        finally:
            llama_cpp.llama_set_abort_callback(llm.ctx, llama_cpp.ggml_abort_callback(), None)
        return prefix

    def make_sampler(self, params: GenerationParams):
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_p < 1.0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def free_sampler(self, chain) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_free(chain)

    def sample(self, chain) -> int:
        import llama_cpp

        return llama_cpp.llama_sampler_sample(chain, self._llm.ctx, -1)

    def decode_one(self, token: int) -> None:
        self._llm.eval((token,))

    @property
    def n_past(self) -> int:
        return self._llm.n_tokens if self._llm is not None else 0


# -- formats for a model file -----------------------------------------------------------


def format_for_backend(backend: LlamaCppBackend, forced: str | None = None) -> PromptFormat:
    """The prompt format of a GGUF with no catalog entry: forced, its own template, or a guess."""
    if forced and forced != "gguf":
        return get_format(forced)
    meta = backend.metadata()
    template = meta.get("tokenizer.chat_template")
    if template:
        llm = backend.load()
        return JinjaFormat(
            template=template,
            bos_token=backend.token_text(llm.token_bos()) if llm.token_bos() >= 0 else "",
            eos_token=backend.token_text(llm.token_eos()) if llm.token_eos() >= 0 else "",
        )
    if forced == "gguf":
        raise ModelLoadError(f"{backend.path.name} has no chat template: choose another --format")
    if backend.special_token_id("<|im_start|>") is not None:
        return get_format("chatml")
    if (
        backend.special_token_id("<|assistant|>") is not None
        and backend.special_token_id("<|end|>") is not None
    ):
        return get_format("starchat")
    if meta.get("general.architecture") == "starcoder2":
        return get_format("starcoder2-instruct")
    raise ModelLoadError(
        f"{backend.path.name} has no chat template and its format cannot be guessed: "
        "pass --format chatml|starchat|starcoder2-instruct"
    )


# -- the engine ---------------------------------------------------------------------------


class Engine:
    """A model (backend) with its prompt format: renders, fits, generates and stops."""

    def __init__(
        self,
        backend: LlamaCppBackend,
        prompt_format: PromptFormat | None = None,
        default_system: str | None = None,
        forced_format: str | None = None,
    ) -> None:
        self.backend = backend
        self._format = prompt_format
        self._forced_format = forced_format
        self.default_system = default_system
        self._stop_ids: frozenset[int] | None = None
        self._extra_stop_texts: tuple[str, ...] = ()

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
            eos = self.backend.eos_id
            if eos >= 0:
                ids.add(eos)
            self._stop_ids = frozenset(ids)
            self._extra_stop_texts = tuple(texts)
        return self._stop_ids, self._extra_stop_texts

    def build_messages(self, turns: Sequence[Message], system: str | None) -> list[Message]:
        chosen = self.default_system if system is None else system
        msgs = list(turns)
        if chosen:
            msgs.insert(0, Message("system", chosen))
        return msgs

    def render_tokens(self, messages: Sequence[Message]) -> list[int]:
        text = self.prompt_format.render(messages)
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
        attachment: str | None = None,
        attach: Callable[[str], str] | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Start generating a reply to ``turns`` (user/assistant, ending with a user turn).

        ``attachment`` + ``attach``: long input (piped text) that may be cut from the
        front to fit; ``attach(kept_text)`` returns the last user message's content.
        ``cancel``: an event any thread may set to stop the generation, even in the
        middle of a long prompt evaluation (stop reason "cancelled").
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
            attachment=attachment,
            attach=attach,
        )
        stats.prompt_tokens = len(fit.tokens)
        stats.dropped_turns = fit.dropped_turns
        stats.truncated_chars = fit.truncated_chars
        chunks = self._run(fit.tokens, params, stats, started, n_ctx, cancel=cancel)
        return Generation(chunks, stats, fit)

    def _begin(self) -> tuple[float, Stats, int]:
        """Start a request: the clock, the model loaded, fresh stats, the context size."""
        started = time.perf_counter()
        self.backend.load()
        n_ctx = self.backend.n_ctx
        return started, Stats(load_seconds=self.backend.take_load_seconds(), n_ctx=n_ctx), n_ctx

    def complete(self, prompt: str, params: GenerationParams | None = None) -> Generation:
        """Continue raw ``prompt`` text (no chat template): the /v1/completions path.

        Stops at end-of-generation tokens, ``params.stop`` and ``max_tokens``; a prompt
        that leaves no room in the context is a :class:`ContextOverflowError`.
        """
        params = params or GenerationParams()
        started, stats, n_ctx = self._begin()
        tokens = self.backend.tokenize(prompt)
        bos = self.backend.bos_id
        if self.backend.add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        if not tokens:
            raise InputError("the prompt is empty")
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt needs {len(tokens)} tokens but the context holds {n_ctx}: shorten it or raise --ctx"
            )
        stats.prompt_tokens = len(tokens)
        chunks = self._run(tokens, params, stats, started, n_ctx, chat=False)
        return Generation(chunks, stats, FitResult(tokens, []))

    def _run(
        self,
        tokens: list[int],
        params: GenerationParams,
        stats: Stats,
        started: float,
        n_ctx: int,
        chat: bool = True,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        backend = self.backend
        stop_ids, extra_texts = self._stops()
        fmt = self.prompt_format
        texts = (*extra_texts, *params.stop) if chat else tuple(params.stop)
        stop_filter = StopTextFilter(texts)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        strip_newline = fmt.strip_leading_newline and chat
        limit = params.max_tokens
        with backend.lock:
            chain = backend.make_sampler(params)
            try:
                t0 = time.perf_counter()
                try:
                    stats.cached_tokens = backend.eval_prompt(tokens, abort=cancel)
                except PromptAborted:
                    stats.stop_reason = "cancelled"
                    return
                stats.prompt_seconds = time.perf_counter() - t0
                first_at = 0.0
                while True:
                    if cancel is not None and cancel.is_set():
                        stats.stop_reason = "cancelled"
                        break
                    token = backend.sample(chain)
                    now = time.perf_counter()
                    if stats.generated_tokens == 0:
                        first_at = now
                        stats.ttft_seconds = now - started
                    if token in stop_ids or backend.is_eog(token):
                        stats.stop_reason = "stop"
                        break
                    stats.generated_tokens += 1
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
                            stats.stop_reason = "stop"
                            break
                    if limit is not None and stats.generated_tokens >= limit:
                        stats.stop_reason = "length"
                        break
                    if backend.n_past >= n_ctx:
                        stats.stop_reason = "context"
                        break
                    backend.decode_one(token)
                if not stop_filter.stopped:
                    tail = stop_filter.feed(decoder.decode(b"", final=True)) + stop_filter.flush()
                    if tail:
                        yield tail
            finally:
                backend.free_sampler(chain)
                if not stats.stop_reason:
                    stats.stop_reason = "cancelled"


class PromptAborted(Exception):
    """The prompt evaluation was interrupted by a cancel request."""


def _reserve(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply when fitting the prompt."""
    if max_tokens is not None:
        return min(max_tokens, n_ctx // 2)
    return min(1024, n_ctx // 4)


__all__ = [
    "Engine",
    "Generation",
    "GenerationParams",
    "LlamaCppBackend",
    "LoadOptions",
    "Stats",
    "default_threads",
]
