"""How many tokens to draft at each step: the draft-length policy over a measured cost curve.

    policy = DraftPolicy("auto", curve)     # or "on" / "off"
    k = policy.length()                     # 0: take a plain one-token step
    policy.observe(drafted=k, accepted=3)   # after verifying a draft

``on`` drafts ``k`` tokens with ``k`` following the running acceptance rate; ``auto`` drafts only
when the acceptance rate and the measured batch-cost curve (:mod:`.calibrate`) predict a gain;
``off`` never drafts.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from starchat_cli.engine.params import Draft

# A draft batch is [last token + k drafts]; on llama.cpp's CPU backend batches of 1-63 tokens give
# bit-identical logits per position to one-token decoding, 64+ do not (see exact_batches.py), so k + 1 < 64.
K_MAX = 16


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


__all__ = ["K_MAX", "DraftPolicy", "best_draft", "expected_tokens", "relative_cost"]
