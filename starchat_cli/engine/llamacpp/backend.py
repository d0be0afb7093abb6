"""llama.cpp through llama-cpp-python: a GGUF model loaded on first use, its vocabulary,
prompt evaluation with KV-cache prefix reuse, sampling and single-token decoding.

The GPU offload is chosen at load (``choose_gpu_layers``); a failed load retries without
flash attention, then with fewer GPU layers, before a one-line :class:`ModelLoadError`.
"""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from starchat_cli.core import defaults
from starchat_cli.core.errors import ModelLoadError, StarchatError
from starchat_cli.engine.contract import CacheSource
from starchat_cli.engine.llamacpp import internals
from starchat_cli.engine.llamacpp.amx import AmxStatus, amx_status, load_mode
from starchat_cli.engine.llamacpp.gpu import GpuChoice, choose_gpu_layers, gpu_offload_supported
from starchat_cli.engine.llamacpp.hardware import default_threads
from starchat_cli.engine.llamacpp.kv_state import (
    EXACT_BATCH,
    LastPrompt,
    cache_key,
    eval_batches,
    load_state,
    save_state,
)
from starchat_cli.engine.llamacpp.log import clear_log, install_log_capture, last_llama_error
from starchat_cli.engine.llamacpp.prompt_cache import (
    MIN_TOKENS,
    CacheKey,
    PromptCache,
    common_prefix,
    model_fingerprint,
)
from starchat_cli.engine.params import GenerationParams

if TYPE_CHECKING:  # llama_cpp is imported on first load (it is slow to import)
    import llama_cpp


@dataclass
class LoadOptions:
    n_ctx: int = defaults.CTX
    n_threads: int | None = None
    gpu: str | int = defaults.GPU  # "auto" (planned), "off", or a number of layers
    n_batch: int = defaults.N_BATCH
    seed: int = 0xFFFFFFFF  # llama.cpp's "random"
    # Flash attention is 7-10% faster decoding on CPU (benchmarks/decode.py); llama-cpp-python
    # only offers on/off, so "on" is tried first and "off" is the fallback when the
    # backend cannot create such a context.
    flash_attn: bool = True
    amx: str = "auto"  # Intel AMX kernels: auto (probed in a child process), on, off (engine/llamacpp/amx.py)


class LlamaCppBackend:
    """A local GGUF model run by llama-cpp-python, loaded on first use."""

    def __init__(
        self,
        path: Path,
        options: LoadOptions | None = None,
        *,
        cache: PromptCache | None = None,
        name: str = "",
    ) -> None:
        self.path = Path(path)
        self.options = options or LoadOptions()
        self.cache = cache if cache is not None and cache.enabled else None
        self.name = name or self.path.stem
        self._cache_key: CacheKey | None = None
        self._unsaved = False  # the sequence changed since it was last saved to the cache
        # The sequence's first ``_exact`` tokens were evaluated as a prompt in exact batches (see
        # EXACT_BATCH): a later prompt sharing them gets the reply an uncached run would give.
        self._exact = 0
        self._last_prompt = LastPrompt()  # the same prompt again: no token evaluated
        self._llm: llama_cpp.Llama | None = None
        self._vocab = None
        self._piece_buf = ctypes.create_string_buffer(256)
        self.load_seconds = 0.0
        self._unreported_load = 0.0
        self.lock = threading.Lock()
        self.gpu: GpuChoice = GpuChoice(0)
        self.trained_ctx = 0
        self.flash_attn = False
        self.warnings: list[str] = []  # things the user must hear (out-of-memory retries, ...)
        self.amx: AmxStatus | None = None  # what was done about Intel AMX at load

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
        from starchat_cli.models.gguf_info import read_gguf_info

        info = read_gguf_info(self.path)  # clear errors for missing/corrupt files first
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StarchatError(
                f"llama-cpp-python is not installed or failed to import ({exc}): pip install llama-cpp-python"
            ) from None
        install_log_capture()
        self.trained_ctx = info.context_length or 0
        n_ctx = self.options.n_ctx
        if self.trained_ctx and n_ctx > self.trained_ctx:
            n_ctx = self.trained_ctx
        self.gpu = choose_gpu_layers(self.options.gpu, info, n_ctx)
        if self.gpu.hint:
            from starchat_cli.engine.llamacpp.hardware import hint_once

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
        # A llama.cpp build whose AMX matmul faults would kill this process on the first prompt:
        # whether it does was found out in a child process (engine/llamacpp/amx.py); load accordingly.
        self.amx = amx_status(self.options.amx)
        with load_mode(self.amx.load_mode):
            llm = self._load_with_fallbacks(llama_cpp.Llama, kwargs, info.block_count or 0)
        self.flash_attn = bool(kwargs["flash_attn"])
        self.load_seconds = self._unreported_load = time.perf_counter() - started
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        return llm

    def _load_with_fallbacks(self, factory, kwargs: dict, n_layers: int):
        """Create the llama.cpp model; on failure retry without flash attention, then with
        fewer GPU layers (out of memory), before giving up with a one-line error."""
        from starchat_cli.engine.llamacpp.offload import fewer_layers

        while True:
            clear_log()
            try:
                return factory(**kwargs)
            except (ValueError, RuntimeError, OSError) as exc:
                detail = last_llama_error() or str(exc)
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

    @property
    def n_vocab(self) -> int:
        return self.load().n_vocab()

    def tokenize(self, text: str, add_bos: bool = False, special: bool = True) -> list[int]:
        """Text to ids; ``special=False`` reads special-token strings as plain text (user files)."""
        return self.load().tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Ids to text, special tokens written out."""
        return b"".join(self.piece(t, special=True) for t in tokens).decode("utf-8", "replace")

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
    def eval_prompt(
        self, tokens: Sequence[int], abort: threading.Event | None = None
    ) -> tuple[int, CacheSource]:
        """Evaluate the prompt, reusing a cached prefix: how many tokens were reused, and from where.

        The prefix comes from the sequence in memory (MEMORY) or, when a saved state shares
        a longer one, from the prompt cache on disk (DISK). With ``abort``, setting that
        event from any thread interrupts the evaluation inside llama.cpp (its abort callback)
        and raises :class:`PromptAborted`; the callback is installed only for the prompt,
        so decoding pays nothing for it.
        """
        llm = self.load()
        cached = internals.tokens(llm)
        if self._last_prompt.restore(llm, cached, tokens):
            return len(tokens), CacheSource.MEMORY
        if self._unsaved:
            self.persist()  # the state in memory was worth keeping: save it before it changes
        self._last_prompt.forget()
        prefix = common_prefix(cached, tokens)
        source = CacheSource.MEMORY if prefix else CacheSource.NONE
        if self.cache is not None and len(tokens) - prefix >= MIN_TOKENS:
            hit = self.cache.best(self._key().digest, tokens)
            if hit is not None and hit.prefix > prefix:
                if load_state(llm, self.cache, hit.entry):
                    prefix, source = hit.prefix, CacheSource.DISK
                    self._exact = min(hit.entry.exact, hit.prefix)
                    if hit.prefix <= hit.entry.exact:
                        # Re-evaluate the tail as one exact batch: the reply is then the one an
                        # uncached run gives, token for token. (A prefix that runs into an earlier
                        # reply's tokens gives the reply of the warm engine that saved it.)
                        prefix = min(prefix, len(tokens) - EXACT_BATCH)
                else:
                    prefix, source = 0, CacheSource.NONE
        if source is CacheSource.MEMORY and prefix <= self._exact:
            # The reused tokens were computed in exact prompt batches (>= EXACT_BATCH tokens):
            # evaluate the tail as such a batch too (a short prompt: all of it, as an uncached
            # run would), so the reply is the one an uncached run gives, token for token.
            prefix = max(0, min(prefix, len(tokens) - EXACT_BATCH))
            source = source if prefix else CacheSource.NONE
        prefix = max(0, min(prefix, len(tokens) - 1))  # always evaluate one token to get logits
        internals.rewind(llm, prefix)
        self._unsaved = True
        exact_after = len(tokens) if prefix <= self._exact and len(tokens) - prefix >= EXACT_BATCH else None
        self._exact = min(self._exact, prefix)
        eval_batches(llm, tokens, prefix, abort)  # PromptAborted when ``abort`` is set meanwhile
        self._exact = exact_after if exact_after is not None else self._exact
        self._last_prompt.remember(tokens, self.last_logits())
        return prefix, source

    def _key(self) -> CacheKey:
        if self._cache_key is None:
            self._cache_key = cache_key(self.load(), self.path, self.name, self.flash_attn)
        return self._cache_key

    def skip_persist(self) -> None:
        """The sequence in memory is not worth saving to disk (a FIM prompt: editors send one per
        keystroke and never repeat it); it stays in memory for the next request's prefix."""
        self._unsaved = False

    def unload(self) -> None:
        """Free the model and its context now (the next use loads it again)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    def persist(self) -> None:
        """Save the sequence in memory to the prompt cache, if it changed and is long enough."""
        llm = self._llm
        if not self._unsaved or self.cache is None or llm is None:
            return
        self._unsaved = False
        n = internals.n_past(llm)
        if n < MIN_TOKENS:
            return
        tokens = internals.tokens(llm)
        self.cache.save(
            self._key(), tokens, lambda path: save_state(llm, path, tokens), exact=min(self._exact, n)
        )

    def make_sampler(self, params: GenerationParams, history: Sequence[int] = ()):
        """The sampler chain for ``params`` (sampler.py); ``history``: the prompt, for the penalties."""
        from starchat_cli.engine.llamacpp.sampler import build_chain

        return build_chain(self._vocab, self._loaded().n_vocab(), params, history)

    def free_sampler(self, chain) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_free(chain)

    def sample(self, chain) -> int:
        import llama_cpp

        return llama_cpp.llama_sampler_sample(chain, self._loaded().ctx, -1)

    def decode_one(self, token: int) -> None:
        self._loaded().eval((token,))

    def _loaded(self) -> llama_cpp.Llama:
        """The model, for the calls that only run after ``load()`` (sampling, drafted decoding)."""
        assert self._llm is not None, "load() first"
        return self._llm

    # -- drafted decoding: the speculative.decoder.Decoder protocol ---------------------------
    def last_logits(self):  # -> numpy float32 array over the vocabulary (a copy)
        """The logits after the last evaluated token (the prompt's, after eval_prompt)."""
        import llama_cpp
        import numpy as np

        llm = self._loaded()
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()

    def decode_batch(self, tokens: Sequence[int]):  # -> numpy array (len(tokens), n_vocab)
        """Evaluate ``tokens`` at the end of the sequence in one batch with logits at every
        position; the sequence's record follows, as after ``eval``."""
        import llama_cpp
        import numpy as np

        llm = self._loaded()
        internals.decode_rows(llm, tokens)
        ptr = llama_cpp.llama_get_logits(llm.ctx)  # rows in batch order, every one requested
        return np.ctypeslib.as_array(ptr, shape=(len(tokens), llm.n_vocab())).copy()

    def truncate(self, n: int) -> None:
        """Drop the sequence's positions from ``n`` on (rejected drafts) from the KV cache."""
        llm = self._llm
        if llm is not None and n < internals.n_past(llm):
            internals.drop_from(llm, n)

    def calibration_key(self) -> str:
        """What the batch-cost curve of ``--draft auto`` depends on: the model file, the device
        split, threads, flash attention and llama.cpp's kernels (speculative/calibrate.py)."""
        import llama_cpp

        return "|".join(
            [
                model_fingerprint(self.path),
                f"gpu={self.gpu.n_gpu_layers}" if gpu_offload_supported() else "cpu",
                f"threads={self.options.n_threads or default_threads()}",
                f"fa={int(self.flash_attn)}",
                str(getattr(llama_cpp, "__version__", "?")),
            ]
        )

    @property
    def n_past(self) -> int:
        return internals.n_past(self._llm) if self._llm is not None else 0
