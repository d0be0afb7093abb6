"""Verifying a draft against the model's logits: greedy, and the exact rule for sampling.

    accepted, next_token = verify_greedy(rows, draft)   # rows: logits of [last, *draft]

:func:`target_probs` / :func:`verify_sampled`: the exact acceptance rule for a deterministic
draft at temperature > 0 (accept drafted ``x`` with probability ``p(x)``; on rejection sample
from ``p`` with ``x`` removed and renormalised), so the output distribution is unchanged.
Pure numpy: no llama.cpp here.
"""

from __future__ import annotations

from typing import Any, Sequence


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


__all__ = ["accept_sampled", "sample_from", "target_probs", "verify_greedy", "verify_sampled"]
