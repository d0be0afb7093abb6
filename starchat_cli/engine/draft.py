"""Drafted (prompt-lookup) decoding, the pure part: no llama.cpp here.

- :class:`NgramDrafter` proposes the tokens that followed the longest recent n-gram of the
  context (prompt + reply so far, plus an optional ``prediction`` such as the file under edit)
  that occurred earlier. The index grows by one entry per n per token, so a proposal is a few
  dict lookups, never a rescan of the context.
- :class:`DraftPolicy` decides how many tokens to draft at each step: ``on`` drafts
  ``k`` tokens with ``k`` following the running acceptance rate; ``auto`` drafts only when the
  acceptance rate and the measured batch-cost curve predict a gain; ``off`` never drafts.
- :func:`target_probs` / :func:`verify_sampled`: the exact acceptance rule for a deterministic
  draft at temperature > 0 (accept drafted ``x`` with probability ``p(x)``; on rejection sample
  from ``p`` with ``x`` removed and renormalised), so the output distribution is unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from starchat_cli.engine.params import Draft

MAX_N = 4  # longest n-gram looked up
MIN_N = 2  # shortest: single tokens repeat too often to predict what follows
# A draft batch is [last token + k drafts]; on llama.cpp's CPU backend batches of 1-63 tokens give
# bit-identical logits per position to one-token decoding, 64+ do not (see local.py), so k + 1 < 64.
K_MAX = 16


class NgramDrafter:
    """An incremental n-gram index over the context and an optional static source.

    ``propose(k)`` looks for the suffix of the context, longest n first (MAX_N down to MIN_N),
    among earlier n-grams of the context (its most recent occurrence) and then of the static
    source (``prediction``), and returns up to ``k`` tokens that followed it.
    """

    def __init__(
        self,
        context: Sequence[int],
        source: Sequence[int] = (),
        max_n: int = MAX_N,
        min_n: int = MIN_N,
    ) -> None:
        self.max_n, self.min_n = max_n, min_n
        self.tokens: list[int] = []
        # n -> n-gram -> end (exclusive) of its most recent occurrence that has a follower
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_n, max_n + 1)}
        self._source = list(source)
        self._source_index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_n, max_n + 1)}
        for end in range(1, len(self._source)):  # the first occurrence wins in a static source
            for n in range(min_n, max_n + 1):
                if end >= n:
                    self._source_index[n].setdefault(tuple(self._source[end - n : end]), end)
        self.extend(context)

    def append(self, token: int) -> None:
        toks = self.tokens
        end = len(toks)  # n-grams ending here now have a follower: index them
        for n in range(self.min_n, self.max_n + 1):
            if end >= n:
                self._index[n][tuple(toks[end - n : end])] = end
        toks.append(int(token))

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            self.append(token)

    def propose(self, k: int) -> list[int]:
        if k <= 0:
            return []
        toks = self.tokens
        size = len(toks)
        for n in range(min(self.max_n, size), self.min_n - 1, -1):
            key = tuple(toks[size - n :])
            end = self._index[n].get(key)
            if end is not None:
                return toks[end : end + k]
            end = self._source_index[n].get(key)
            if end is not None:
                return self._source[end : end + k]
        return []


def expected_tokens(a: float, k: int) -> float:
    """Tokens per step when drafting ``k`` tokens each accepted with probability ``a`` (until
    the first rejection) plus the one token every step yields: 1 + a + ... + a**k."""
    if a >= 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def relative_cost(curve: Mapping[int, float], size: int) -> float:
    """The time of a ``size``-token batch over a one-token one, from a measured curve (linear
    between measured sizes, the last slope beyond them)."""
    points = sorted((int(s), float(c)) for s, c in curve.items())
    if not points:
        return float(size)
    if size <= points[0][0]:
        return points[0][1]
    for (s0, c0), (s1, c1) in zip(points, points[1:]):
        if size <= s1:
            return c0 + (c1 - c0) * (size - s0) / (s1 - s0)
    if len(points) == 1:
        return points[0][1] * size / points[0][0]
    (s0, c0), (s1, c1) = points[-2], points[-1]
    return c1 + max(0.0, (c1 - c0) / (s1 - s0)) * (size - s1)


def best_draft(a: float, curve: Mapping[int, float], k_max: int = K_MAX) -> tuple[int, float]:
    """The draft length with the highest predicted speedup (tokens per step / batch cost),
    never beyond the largest batch measured (a time budget may have cut the curve short)."""
    best_k, best_gain = 0, 1.0
    if curve:
        k_max = min(k_max, max(int(s) for s in curve) - 1)
    for k in range(1, k_max + 1):
        gain = expected_tokens(a, k) / relative_cost(curve, k + 1)
        if gain > best_gain:
            best_k, best_gain = k, gain
    return best_k, best_gain


class DraftPolicy:
    """How many tokens to draft next, from the mode, the acceptance so far and (auto) the curve.

    The acceptance rate is per drafted token: accepted / (accepted + rejections), with a prior
    and exponential forgetting so it follows the reply (copying a file, then writing prose).
    ``auto`` also learns from steps where it did not draft: ``shadow`` compares what the n-gram
    lookup would have proposed with the tokens that came (same expectation as drafting them).
    """

    MARGIN = 1.15  # predicted speedup auto needs before it drafts
    DECAY = 0.97

    def __init__(
        self,
        mode: Draft | str,
        curve: Mapping[int, float] | None = None,
        k_max: int = K_MAX,
        prior: tuple[float, float] = (1.5, 1.0),  # (accepted, rejected) pseudo-counts: a = 0.6
    ) -> None:
        self.mode = Draft(mode)  # a ValueError for anything but auto, on, off
        self.curve = dict(curve or {})
        self.k_max = k_max
        self.accepted, self.rejected = prior
        self._shadow: list[int] = []
        self._shadow_hits = 0
        self._k: int | None = None  # length() for the current rate (it changes only in observe)

    @property
    def rate(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def observe(self, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        self.accepted = self.accepted * self.DECAY + accepted
        self.rejected = self.rejected * self.DECAY + (1 if accepted < drafted else 0)
        self._k = None

    def length(self) -> int:
        """Tokens to draft at this step (0: a plain one-token step)."""
        if self._k is None:
            self._k = self._length()
        return self._k

    def _length(self) -> int:
        if self.mode == "off":
            return 0
        a = self.rate
        if self.mode == "on":
            # the expected run before a rejection (a / (1 - a)) plus one
            run = a / (1.0 - a) if a < 1.0 else float(self.k_max)
            return max(1, min(self.k_max, int(run) + 1))
        k, gain = best_draft(a, self.curve, self.k_max)
        return k if gain >= self.MARGIN else 0

    @property
    def wants_shadow(self) -> bool:
        return self.mode == "auto" and not self._shadow

    def shadow(self, proposal: Sequence[int]) -> None:
        """Remember what would have been drafted at a plain step."""
        self._shadow = list(proposal)
        self._shadow_hits = 0

    def shadow_next(self, token: int) -> None:
        """A token came from a plain step: score the pending shadow draft with it."""
        if not self._shadow:
            return
        if token == self._shadow[self._shadow_hits]:
            self._shadow_hits += 1
            if self._shadow_hits < len(self._shadow):
                return
        self.observe(len(self._shadow), self._shadow_hits)
        self._shadow = []


# -- verification -------------------------------------------------------------------------


def target_probs(logits: Any, temperature: float, top_p: float) -> Any:
    """The distribution starchat's llama.cpp sampler chain draws from: top-p on the raw
    logits (softmax at temperature 1, keep the smallest top set reaching ``top_p``, at least
    one), then temperature, then softmax. A float64 array over the vocabulary."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    keep = None
    if top_p < 1.0:
        p1 = np.exp(x - x.max())
        p1 /= p1.sum()
        m = min(len(x), 512)
        order = None
        if m < len(x):
            top = np.argpartition(-p1, m - 1)[:m]
            top = top[np.argsort(-p1[top], kind="stable")]
            if p1[top].sum() >= top_p:
                order = top
        if order is None:
            order = np.argsort(-p1, kind="stable")
        cum = np.cumsum(p1[order])
        last = int(np.searchsorted(cum, top_p))  # first index where cum >= top_p
        keep = order[: min(len(order), last + 1)]
    z = x / temperature
    out = np.zeros_like(z)
    if keep is None:
        e = np.exp(z - z.max())
        return e / e.sum()
    zk = z[keep]
    e = np.exp(zk - zk.max())
    out[keep] = e / e.sum()
    return out


def sample_from(probs: Any, rng: Any) -> int:
    import numpy as np

    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(probs) - 1))


def accept_sampled(probs: Any, drafted: int, rng: Any) -> tuple[bool, int]:
    """One drafted token under the exact rule: (True, drafted) with probability p(drafted);
    otherwise (False, y) with y drawn from p without ``drafted``, renormalised."""
    p = float(probs[drafted])
    if rng.random() < p:
        return True, drafted
    rest = probs.copy()
    rest[drafted] = 0.0
    if rest.sum() <= 0.0:  # p(drafted) was 1 up to rounding
        return True, drafted
    return False, sample_from(rest, rng)


def verify_greedy(rows: Any, draft: Sequence[int]) -> tuple[int, int]:
    """Greedy verification: (accepted count, next token) for logits ``rows`` of
    [last, d1..dk]: d_i is kept while it is the argmax after its predecessor."""
    for i, tok in enumerate(draft):
        best = int(rows[i].argmax())
        if best != tok:
            return i, best
    return len(draft), int(rows[len(draft)].argmax())


def verify_sampled(
    rows: Any, draft: Sequence[int], temperature: float, top_p: float, rng: Any
) -> tuple[int, int]:
    """Sampled verification with :func:`accept_sampled`: (accepted count, next token)."""
    for i, tok in enumerate(draft):
        ok, tok2 = accept_sampled(target_probs(rows[i], temperature, top_p), tok, rng)
        if not ok:
            return i, tok2
    return len(draft), sample_from(target_probs(rows[len(draft)], temperature, top_p), rng)


__all__ = [
    "DraftPolicy",
    "NgramDrafter",
    "accept_sampled",
    "best_draft",
    "expected_tokens",
    "relative_cost",
    "target_probs",
    "verify_greedy",
    "verify_sampled",
]
