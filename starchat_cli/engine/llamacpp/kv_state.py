"""llama.cpp's sequence 0: prompt evaluation in batches that do not depend on the cache, and its
state to and from the prompt cache's files (through llama-cpp-python).

Only sequence 0 is used. A state is loaded only after the cache has checked the file's size and
CRC-32; the token ids llama.cpp reads back must equal the entry's, else the sequence is cleared
and the entry removed.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any, Sequence

from starchat_cli.engine.llamacpp import internals
from starchat_cli.engine.llamacpp.prompt_cache import CacheEntry, CacheKey, PromptCache, model_fingerprint

# llama.cpp's CPU backend computes a batch of 64 or more tokens row for row the same whatever
# its size, and smaller batches with other kernels: measured on the demo model, the last
# prompt token's logits differ by up to 0.7 for batches of 1-63 and are bit-identical at 64+.
EXACT_BATCH = 64


class PromptAborted(Exception):
    """The prompt evaluation was interrupted by a cancel request."""


def eval_batches(llm: Any, tokens: Sequence[int], start: int, abort: threading.Event | None = None) -> None:
    """Evaluate ``tokens[start:]`` in batches of n_batch whose last one has at least
    EXACT_BATCH tokens (when the prompt allows), so every prompt token is computed by the
    same kernels whether or not a prefix came from the cache. With ``abort``, setting that
    event from any thread interrupts the evaluation inside llama.cpp (its abort callback,
    installed for these batches only) and raises :class:`PromptAborted`."""
    if abort is None:
        _eval_batches(llm, tokens, start)
        return
    import llama_cpp

    callback = llama_cpp.ggml_abort_callback(lambda _data: abort.is_set())
    llama_cpp.llama_set_abort_callback(llm.ctx, callback, None)
    try:
        _eval_batches(llm, tokens, start)
    except RuntimeError:
        if abort.is_set():
            raise PromptAborted() from None
        raise
    finally:
        llama_cpp.llama_set_abort_callback(llm.ctx, llama_cpp.ggml_abort_callback(), None)


def _eval_batches(llm: Any, tokens: Sequence[int], start: int) -> None:
    sizes: list[int] = []
    rest = len(tokens) - start
    while rest > 0:
        sizes.append(min(llm.n_batch, rest))
        rest -= sizes[-1]
    if len(sizes) > 1 and sizes[-1] < EXACT_BATCH:
        move = EXACT_BATCH - sizes[-1]
        sizes[-2] -= move
        sizes[-1] += move
    at = start
    for size in sizes:
        llm.eval(tokens[at : at + size])
        at += size


class LastPrompt:
    """The prompt evaluated last and the logits after it. Asked the same prompt again while the
    KV cache still starts with it (an ``ask`` repeated against a warm worker), :meth:`restore`
    drops what followed (the last reply) and puts those logits back as the context's last row:
    the reply starts as that evaluation left it, with no token evaluated, and is the same reply
    token for token (same KV cells, same logits)."""

    def __init__(self) -> None:
        self._tokens: tuple[int, ...] | None = None
        self._logits: Any = None

    def remember(self, tokens: Sequence[int], logits: Any) -> None:
        self._tokens, self._logits = tuple(tokens), logits

    def forget(self) -> None:
        self._tokens = self._logits = None

    def restore(self, llm: Any, cached: Sequence[int], tokens: Sequence[int]) -> bool:
        import llama_cpp
        import numpy as np

        n = len(tokens)
        if self._tokens is None or self._tokens != tuple(tokens) or list(cached[:n]) != list(tokens):
            return False
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        if not ptr:  # no output row to put them in: evaluate as usual
            return False
        internals.drop_from(llm, n)
        np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))[:] = self._logits
        return True


def cache_key(llm: Any, path: Path, name: str, flash_attn: bool) -> CacheKey:
    import llama_cpp

    return CacheKey(
        model=name,
        fingerprint=model_fingerprint(path),
        n_ctx=int(llm.n_ctx()),
        flash_attn=flash_attn,
        kv_type="f16",  # llama-cpp-python's default type_k / type_v, which starchat keeps
        llama=str(getattr(llama_cpp, "__version__", "?")),
    )


def clear_sequence(llm: Any) -> None:
    import llama_cpp

    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), 0, -1, -1)
    internals.rewind(llm, 0)


def load_state(llm: Any, cache: PromptCache, entry: CacheEntry) -> bool:
    """Put ``entry``'s KV cache into sequence 0 and its tokens into ``llm``; False if it fails."""
    import llama_cpp

    if not cache.verify(entry):
        return False
    n = entry.n_tokens
    if n > int(llm.n_ctx()):
        cache.discard(entry, f"prompt-cache entry {entry.id} is longer than the context: removed")
        return False
    clear_sequence(llm)
    out = (llama_cpp.llama_token * n)()
    count = ctypes.c_size_t(0)
    read = llama_cpp.llama_state_seq_load_file(
        llm.ctx, str(entry.state_path).encode(), 0, out, n, ctypes.byref(count)
    )
    if read == 0 or count.value != n or list(out) != entry.tokens:
        clear_sequence(llm)
        cache.discard(entry, f"prompt-cache entry {entry.id} could not be loaded by llama.cpp: removed")
        return False
    internals.set_tokens(llm, entry.tokens)
    cache.touch(entry)
    return True


def save_state(llm: Any, path: Path, tokens: Sequence[int]) -> bool:
    """Write sequence 0 (whose tokens are ``tokens``) to ``path``."""
    import llama_cpp

    arr = (llama_cpp.llama_token * len(tokens))(*tokens)
    return llama_cpp.llama_state_seq_save_file(llm.ctx, str(path).encode(), 0, arr, len(tokens)) > 0
