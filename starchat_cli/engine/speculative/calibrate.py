"""The batch-cost curve for ``--draft auto``: how long a batch of 1, 2, 4, 8, 16 tokens takes
relative to one token, measured once per model file + device (GPU layers) + threads and cached
as JSON in the cache dir.

    curve, seconds = decoder_curve(decoder, key, prompt_tokens, n_ctx, default_cache())

Measured in the background, once the first generation that would draft has ended (that one
decodes without drafting: a client never waits for the measurement): each batch is evaluated at
the end of the sequence under the model's lock and removed from the KV cache again, so no reply
changes and a request waits for at most one batch. The timing includes reading every position's logits and the argmax, the work a
drafted step adds. Cost on the demo model (2 threads, 2-core CPU): 1.7 s, once per model and
device; a time budget (4 s) keeps it bounded on big models, and ``auto`` never drafts beyond the
largest batch it measured.
"""

from __future__ import annotations

import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Sequence

from starchat_cli.core.keyed import KeyedFile
from starchat_cli.engine.speculative.decoder import Decoder

SIZES = (1, 2, 4, 8, 16)
REPEATS = 3
BUDGET_SECONDS = 4.0
FILE_NAME = "draft-batch-cost.json"


def measure_curve(
    run_batch: Callable[[int], float | None],
    sizes: Sequence[int] = SIZES,
    repeats: int = REPEATS,
    budget: float = BUDGET_SECONDS,
) -> dict[int, float]:
    """Median time of ``run_batch(size)`` per size over ``repeats`` rounds (sizes interleaved),
    relative to size 1. One warm-up batch first; rounds stop once ``budget`` seconds of batches
    are spent (at least one full round of the sizes that fit it). A ``run_batch`` that returns
    seconds is timed by itself (a background measurement that waits for a lock first times only
    the batch); one that returns None is timed here."""
    run_batch(1)  # warm-up
    times: dict[int, list[float]] = {s: [] for s in sizes}
    spent = 0.0
    for round_no in range(repeats):
        for i, size in enumerate(sizes):
            if spent > budget and (round_no > 0 or i >= 2):
                break
            t0 = time.perf_counter()
            own = run_batch(size)
            took = own if own is not None else time.perf_counter() - t0
            spent += took
            times[size].append(took)
    base = statistics.median(times[sizes[0]])
    return {s: round(statistics.median(t) / base, 4) for s, t in times.items() if t}


class CurveCache(KeyedFile):
    """The measured curves by key, in one JSON file (atomic writes; a corrupt file is ignored)."""

    def get(self, key: str) -> dict[int, float] | None:
        entry = self._entry(key)
        if entry is None or not isinstance(entry.get("curve"), dict):
            return None
        try:
            curve = {int(s): float(c) for s, c in entry["curve"].items()}
        except (TypeError, ValueError):
            return None
        if 1 not in curve or any(c <= 0 for c in curve.values()):
            return None
        return curve

    def put(self, key: str, curve: dict[int, float], seconds: float) -> None:
        self._put(key, {  # an unwritable cache dir only means measuring again next time
            "curve": {str(s): c for s, c in sorted(curve.items())},
            "seconds": round(seconds, 3),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })  # fmt: skip


def default_cache() -> CurveCache:
    from starchat_cli.core.paths import get_paths

    return CurveCache(get_paths().cache_dir / FILE_NAME)


class NoRoom(Exception):
    """The context has no room for the measured batches now (the sequence is too long)."""


def decoder_curve(
    decoder: Decoder,
    key: str,
    tokens: Sequence[int],
    cache: CurveCache,
    lock: AbstractContextManager[Any] = nullcontext(),
) -> tuple[dict[int, float] | None, float]:
    """The decoder's curve, and the seconds a measurement took (0.0 when it came from ``cache``
    under ``key``: what the curve depends on, the model file, device split, threads and kernels,
    as the backend words it). Each batch is evaluated after the sequence under ``lock`` and
    removed again, so between batches the sequence is as it was and other work may run; (None,
    0.0) when the context has no room for them (``tokens``: what the batches are made of)."""
    curve = cache.get(key)
    if curve is not None:
        return curve, 0.0
    filler = (list(tokens) * max(SIZES))[-max(SIZES) :] or [0] * max(SIZES)

    def run_batch(size: int) -> float:
        with lock:
            start = decoder.n_past
            if start + max(SIZES) > decoder.n_ctx:
                raise NoRoom
            t0 = time.perf_counter()
            decoder.decode_batch(filler[:size]).argmax(axis=1)
            took = time.perf_counter() - t0
            decoder.truncate(start)
            return took

    t0 = time.perf_counter()
    try:
        curve = measure_curve(run_batch)
    except NoRoom:
        return None, 0.0
    seconds = time.perf_counter() - t0
    cache.put(key, curve, seconds)
    return curve, seconds


__all__ = ["CurveCache", "NoRoom", "decoder_curve", "default_cache", "measure_curve"]
