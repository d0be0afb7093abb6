"""The token sources of the local engine's decode loop: plain (one token per forward pass,
llama.cpp's sampler) and drafted (prompt lookup, several tokens verified per pass).

    request = DraftRequest(params=params, prompt=prompt_ids, prediction=prediction_ids, policy=policy,
                           n_ctx=n_ctx, chain=sampler, exact=ExactBatches(decoder), cancel=cancel)
    for token, drafted in drafted_source(decoder, request, stats): ...

A source yields ``(token, drafted)`` pairs; the loop in llamacpp/engine.py counts, detokenizes and
stops (token-id stops, text stops, max_tokens) and simply stops pulling, so nothing after a
stop is evaluated. Before each forward pass a source checks cancel and the context limit.

Drafted steps evaluate [last token + k drafted tokens] in one batch with logits at every
position, keep the longest verified run and drop the rest from the KV cache. Greedy output
is identical to plain decoding only where llama.cpp computes each row of such a batch bit for
bit as a one-token step does: batches below 64 tokens (policy.K_MAX is 16) and, on the CPU
with several threads, fewer than 512 KV cells in the attention's view. That is not assumed
but checked on this machine, once per attention view (exact_batches.py); where the
check fails, the step is a plain one and ``stats.draft_stopped_at`` says from where.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from starchat_cli.engine.contract import Stats, StopReason
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.speculative.decoder import Decoder
from starchat_cli.engine.speculative.exact_batches import ExactBatches
from starchat_cli.engine.speculative.lookup import NgramDrafter
from starchat_cli.engine.speculative.policy import DraftPolicy
from starchat_cli.engine.speculative.verify import sample_from, target_probs, verify_greedy, verify_sampled

Source = Iterator[tuple[int, bool]]


@dataclass(frozen=True, kw_only=True)
class DraftRequest:
    """What one drafted generation decodes with, built by the engine after the prompt's evaluation."""

    params: GenerationParams  # temperature, top_p and seed pick tokens; max_tokens caps the drafts
    prompt: Sequence[int]  # the evaluated prompt: the n-gram lookup's first context
    prediction: Sequence[int]  # expected output (the file under edit), looked up after the context
    policy: DraftPolicy
    n_ctx: int
    chain: Any  # the backend's sampler chain, for steps without a draft
    exact: ExactBatches  # where batches verify exactly, learnt per loaded model
    cancel: threading.Event | None = None
    first_logits: Any = None  # the prompt's logits, when a calibration overwrote the context's


def plain_source(
    decoder: Decoder, chain: Any, stats: Stats, n_ctx: int, cancel: threading.Event | None
) -> Source:
    while True:
        if cancel is not None and cancel.is_set():
            stats.stop_reason = StopReason.CANCELLED
            return
        token = decoder.sample(chain)
        yield token, False
        if decoder.n_past >= n_ctx:
            stats.stop_reason = StopReason.CONTEXT
            return
        decoder.decode_one(token)
        stats.decode_steps += 1


def drafted_source(decoder: Decoder, request: DraftRequest, stats: Stats) -> Source:
    """Tokens from drafted decoding. Steps without a draft use the sampler ``request.chain``
    as plain decoding does; drafted steps verify in numpy (:mod:`.verify`). The first token
    comes from ``request.first_logits`` when a calibration overwrote the context's logits."""
    import numpy as np

    params, policy, cancel, exact = request.params, request.policy, request.cancel, request.exact
    greedy = params.temperature <= 0
    rng = np.random.default_rng(params.seed)
    drafter = NgramDrafter(request.prompt, request.prediction)

    def pick(row) -> int:
        if greedy:
            return int(row.argmax())  # llama.cpp's greedy sampler: the first maximum, as argmax
        return sample_from(target_probs(row, params.temperature, params.top_p), rng)

    first = request.first_logits
    token = decoder.sample(request.chain) if first is None else pick(first)
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
        room = request.n_ctx - decoder.n_past
        if room <= 0:
            stats.stop_reason = StopReason.CONTEXT
            return
        k = min(policy.length(), room - 1)
        if params.max_tokens is not None:
            k = min(k, params.max_tokens - produced - 1)
        draft = drafter.propose(k) if k > 0 else []
        if draft:
            fits = exact.room(token, draft)
            if fits == 0 and not stats.draft_stopped_at and exact.failed_here():
                stats.draft_stopped_at = decoder.n_past  # batches here would change the text
            draft = draft[:fits]
        stats.decode_steps += 1
        produced += 1
        if not draft:
            # a plain step, exactly as plain_source takes it (llama.cpp's sampler, no logits copied)
            if policy.wants_shadow:
                policy.shadow(drafter.propose(policy.k_max))
            decoder.decode_one(token)
            token = decoder.sample(request.chain)
            continue
        policy.shadow(())  # a real draft scores itself
        start = decoder.n_past
        rows = decoder.decode_batch([token, *draft])
        if greedy:
            accepted, token = verify_greedy(rows, draft)
        else:
            accepted, token = verify_sampled(rows, draft, params.temperature, params.top_p, rng)
        decoder.truncate(start + 1 + accepted)  # drop the rejected positions
        stats.drafted_tokens += len(draft)
        policy.observe(len(draft), accepted)
        produced += accepted
        for tok in draft[:accepted]:
            yield tok, True
            drafter.append(tok)


__all__ = ["DraftRequest", "drafted_source", "plain_source"]
