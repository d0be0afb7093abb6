"""The token sources of the local engine's decode loop: plain (one token per forward pass,
llama.cpp's sampler) and drafted (prompt lookup, several tokens verified per pass).

A source yields ``(token, drafted)`` pairs; the loop in local.py counts, detokenizes and
stops (token-id stops, text stops, max_tokens) and simply stops pulling, so nothing after a
stop is evaluated. Before each forward pass a source checks cancel and the context limit.

Drafted steps evaluate [last token + k drafted tokens] in one batch with logits at every
position, keep the longest verified run and drop the rest from the KV cache. Greedy output
is identical to plain decoding only where llama.cpp computes each row of such a batch bit for
bit as a one-token step does: batches below 64 tokens (draft.K_MAX is 16) and, on the CPU
with several threads, fewer than 512 KV cells in the attention's view. That is not assumed
but checked on this machine, once per attention view (engine/exact_batches.py); where the
check fails, the step is a plain one and ``stats.draft_stopped_at`` says from where.
"""

from __future__ import annotations

import threading
from typing import Iterator, Sequence

from starchat_cli.engine.contract import GenerationParams, Stats, StopReason
from starchat_cli.engine.draft import (
    DraftPolicy,
    NgramDrafter,
    sample_from,
    target_probs,
    verify_greedy,
    verify_sampled,
)
from starchat_cli.engine.exact_batches import ExactBatches
from starchat_cli.engine.llama import LlamaCppBackend

Source = Iterator[tuple[int, bool]]


def plain_source(
    backend: LlamaCppBackend, chain, stats: Stats, n_ctx: int, cancel: threading.Event | None
) -> Source:
    while True:
        if cancel is not None and cancel.is_set():
            stats.stop_reason = StopReason.CANCELLED
            return
        token = backend.sample(chain)
        yield token, False
        if backend.n_past >= n_ctx:
            stats.stop_reason = StopReason.CONTEXT
            return
        backend.decode_one(token)
        stats.decode_steps += 1


def drafted_source(
    backend: LlamaCppBackend,
    params: GenerationParams,
    prompt: Sequence[int],
    prediction: Sequence[int],
    policy: DraftPolicy,
    stats: Stats,
    n_ctx: int,
    cancel: threading.Event | None,
    chain,
    first_logits,
    limit: int | None,
    exact: ExactBatches,
) -> Source:
    """Tokens from drafted decoding. Steps without a draft use llama.cpp's sampler ``chain``
    as plain decoding does; drafted steps verify in numpy (:mod:`engine.draft`). The first
    token comes from ``first_logits`` when a calibration overwrote the context's logits."""
    import numpy as np

    greedy = params.temperature <= 0
    rng = np.random.default_rng(params.seed)
    drafter = NgramDrafter(prompt, prediction)

    def pick(row) -> int:
        if greedy:
            return int(row.argmax())  # llama.cpp's greedy sampler: the first maximum, as argmax
        return sample_from(target_probs(row, params.temperature, params.top_p), rng)

    token = backend.sample(chain) if first_logits is None else pick(first_logits)
    produced = 1  # tokens handed out so far, for the max_tokens cap on drafts
    if cancel is not None and cancel.is_set():
        stats.stop_reason = StopReason.CANCELLED
        return
    while True:
        yield token, False
        drafter.append(token)
        policy.shadow_next(token)
        if cancel is not None and cancel.is_set():
            stats.stop_reason = StopReason.CANCELLED
            return
        room = n_ctx - backend.n_past
        if room <= 0:
            stats.stop_reason = StopReason.CONTEXT
            return
        k = min(policy.length(), room - 1)
        if limit is not None:
            k = min(k, limit - produced - 1)
        draft = drafter.propose(k) if k > 0 else []
        if draft:
            fits = exact.room(token, draft)
            if fits == 0 and not stats.draft_stopped_at and exact.failed_here():
                stats.draft_stopped_at = backend.n_past  # batches here would change the text
            draft = draft[:fits]
        stats.decode_steps += 1
        produced += 1
        if not draft:
            # a plain step, exactly as plain_source takes it (llama.cpp's sampler, no logits copied)
            if policy.wants_shadow:
                policy.shadow(drafter.propose(policy.k_max))
            backend.decode_one(token)
            token = backend.sample(chain)
            continue
        policy.shadow(())  # a real draft scores itself
        start = backend.n_past
        rows = backend.decode_batch([token, *draft])
        if greedy:
            accepted, token = verify_greedy(rows, draft)
        else:
            accepted, token = verify_sampled(rows, draft, params.temperature, params.top_p, rng)
        backend.truncate(start + 1 + accepted)  # drop the rejected positions
        stats.drafted_tokens += len(draft)
        policy.observe(len(draft), accepted)
        produced += accepted
        for tok in draft[:accepted]:
            yield tok, True
            drafter.append(tok)


__all__ = ["drafted_source", "plain_source"]
