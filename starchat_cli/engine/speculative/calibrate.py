"""The batch-cost curve for ``--draft auto``: how long a batch of 1, 2, 4, 8, 16 tokens takes
relative to one token, measured once per model file + device (GPU layers) + threads and cached
as JSON in the cache dir.

    curve, seconds = decoder_curve(decoder, key, prompt_tokens, n_ctx, default_cache())

Measured lazily, by the first generation that would draft, right after its prompt: the batches
are evaluated at the end of the sequence and removed from the KV cache again, so the reply is
unchanged. The timing includes reading every position's logits and the argmax, the work a
drafted step adds. Cost on the demo model (2 threads, 2-core CPU): 1.7 s, once per model and
device; a time budget (4 s) keeps it bounded on big models, and ``auto`` never drafts beyond the
largest batch it measured.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from starchat_cli.core.fsutil import atomic_write_text
from starchat_cli.engine.speculative.decoder import Decoder

SIZES = (1, 2, 4, 8, 16)
REPEATS = 3
BUDGET_SECONDS = 4.0
FILE_NAME = "draft-batch-cost.json"


def measure_curve(
    run_batch: Callable[[int], None],
    sizes: Sequence[int] = SIZES,
    repeats: int = REPEATS,
    budget: float = BUDGET_SECONDS,
) -> dict[int, float]:
    """Median time of ``run_batch(size)`` per size over ``repeats`` rounds (sizes interleaved),
    relative to size 1. One warm-up batch first; rounds stop once ``budget`` seconds are spent
    (at least one full round of the sizes that fit it)."""
    run_batch(1)  # warm-up
    times: dict[int, list[float]] = {s: [] for s in sizes}
    started = time.perf_counter()
    for round_no in range(repeats):
        for i, size in enumerate(sizes):
            over = time.perf_counter() - started > budget
            if over and (round_no > 0 or i >= 2):
                break
            t0 = time.perf_counter()
            run_batch(size)
            times[size].append(time.perf_counter() - t0)
    base = statistics.median(times[sizes[0]])
    return {s: round(statistics.median(t) / base, 4) for s, t in times.items() if t}


class CurveCache:
    """The measured curves by key, in one JSON file (atomic writes; a corrupt file is ignored)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[int, float] | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("curve"), dict):
            return None
        try:
            curve = {int(s): float(c) for s, c in entry["curve"].items()}
        except (TypeError, ValueError):
            return None
        if 1 not in curve or any(c <= 0 for c in curve.values()):
            return None
        return curve

    def put(self, key: str, curve: dict[int, float], seconds: float) -> None:
        data = self._read()
        data[key] = {
            "curve": {str(s): c for s, c in sorted(curve.items())},
            "seconds": round(seconds, 3),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass  # an unwritable cache dir only means measuring again next time


def default_cache() -> CurveCache:
    from starchat_cli.core.paths import get_paths

    return CurveCache(get_paths().cache_dir / FILE_NAME)


def decoder_curve(
    decoder: Decoder, key: str, tokens: Sequence[int], n_ctx: int, cache: CurveCache
) -> tuple[dict[int, float] | None, float]:
    """The curve of a decoder whose prompt was just evaluated, and the seconds a measurement
    took (0.0 when it came from ``cache`` under ``key``: what the curve depends on, the model
    file, device split, threads and kernels, as the backend words it). Measured batches are
    evaluated after the prompt and removed again, so the sequence is as it was; (None, 0.0)
    when the context has no room for them in this run."""
    curve = cache.get(key)
    if curve is not None:
        return curve, 0.0
    start = decoder.n_past
    if start + max(SIZES) > n_ctx:
        return None, 0.0
    filler = (list(tokens) * max(SIZES))[-max(SIZES) :]

    def run_batch(size: int) -> None:
        decoder.decode_batch(filler[:size]).argmax(axis=1)
        decoder.truncate(start)

    t0 = time.perf_counter()
    curve = measure_curve(run_batch)
    seconds = time.perf_counter() - t0
    cache.put(key, curve, seconds)
    return curve, seconds


__all__ = ["CurveCache", "decoder_curve", "default_cache", "measure_curve"]
