"""``--draft auto``'s batch-cost curve for one engine: from the cache file, else measured in the background.

    curve = AutoCurve(backend, cache)
    known = curve.ready()              # under the backend's lock: the curve, or None (never measures)
    if known is None:
        curve.measure_later(tokens)    # this reply decodes without drafting; the curve comes after
    curve.wait(timeout=30)             # tests and benchmarks: until the measurement is over

A first measurement costs about 1.7 s on the demo model (speculative/calibrate.py). Measured
inside a request, a client's first reply on a fresh cache folder waited for it (3.2 s to the
first byte against 0.3 s warm). Here the request that finds no curve decodes without drafting
(the text is the same: drafting changes speed only) and a daemon thread measures once that reply
has released the model's lock, one batch at a time under the lock, so a request arriving meanwhile
waits for at most one batch. At interpreter exit the thread is told to stop and joined.
"""

from __future__ import annotations

import atexit
import threading
from typing import Sequence

from starchat_cli.engine.llamacpp.backend import LlamaCppBackend
from starchat_cli.engine.speculative.calibrate import CurveCache, decoder_curve, default_cache

JOIN_SECONDS = 5.0  # at exit: at most one batch is in flight


class _Stopped(Exception):
    """The process is exiting: the measurement is abandoned (nothing is written)."""


class AutoCurve:
    """The curve of one backend (model file + device + threads), known, being measured, or neither."""

    def __init__(self, backend: LlamaCppBackend, cache: CurveCache | None = None) -> None:
        self.backend = backend
        self._cache = cache
        self.curve: dict[int, float] | None = None
        self.seconds = 0.0  # what the measurement took (0.0: read from the cache file)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._stop = threading.Event()

    @property
    def cache(self) -> CurveCache:
        return self._cache or default_cache()

    def ready(self) -> dict[int, float] | None:
        """The curve if it is known: measured here, or in the cache file (call with the lock held)."""
        if self.curve is None:
            self.curve = self.cache.get(self.backend.calibration_key())
        return self.curve

    @property
    def measuring(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def measure_later(self, tokens: Sequence[int]) -> None:
        """Start measuring in the background (once); ``tokens``: what the batches are made of."""
        if self._thread is not None:
            return
        key = self.backend.calibration_key()  # the caller holds the lock: read it now
        self._thread = threading.Thread(
            target=self._measure, args=(key, list(tokens)), name="starchat-calibrate", daemon=True
        )
        atexit.register(self._stop_at_exit)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> dict[int, float] | None:
        """The curve once a measurement under way is over (None: none started, or no room)."""
        if self._thread is not None:
            self._done.wait(timeout)
        return self.curve

    def _measure(self, key: str, tokens: list[int]) -> None:
        lock = _StoppableLock(self.backend.lock, self._stop)
        try:
            self.curve, self.seconds = decoder_curve(self.backend, key, tokens, self.cache, lock)
        except _Stopped:
            pass
        except Exception:  # noqa: BLE001 - a failed measurement only means no drafting under auto
            pass
        finally:
            self._done.set()

    def _stop_at_exit(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)


class _StoppableLock:
    """The backend's lock, refusing (``_Stopped``) once the process is exiting."""

    def __init__(self, lock: threading.Lock, stop: threading.Event) -> None:
        self.lock, self.stop = lock, stop

    def __enter__(self) -> None:
        self.lock.acquire()
        if self.stop.is_set():
            self.lock.release()
            raise _Stopped

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


__all__ = ["AutoCurve"]
