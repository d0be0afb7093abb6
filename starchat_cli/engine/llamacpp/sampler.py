"""llama.cpp's sampler chain for one reply, and the per-token logprobs a face may ask for.

    chain = build_chain(vocab, n_vocab, params, history=prompt_tokens)   # InputError: a bad grammar
    entry = token_logprob(logits, token, top=5, piece=backend.piece)     # a TokenLogprob

The chain, in llama.cpp's own order: logit bias, penalties (over the last
:data:`~starchat_cli.engine.params.PENALTY_LAST_N` tokens, the prompt's included, as llama-server
counts them), the grammar, then greedy, or top-k, top-p, min-p, temperature and a seeded draw. Without any
of the extras the chain is exactly the one starchat always had (greedy output unchanged). The
grammar sits before the pick, so a token it rejects is never drawn; ``llama_sampler_sample``
then tells every sampler of the chain the token (the grammar advances, the penalties count it).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from starchat_cli.core.errors import InputError
from starchat_cli.engine.contract import TokenLogprob
from starchat_cli.engine.params import PENALTY_LAST_N, GenerationParams


def build_chain(vocab: Any, n_vocab: int, params: GenerationParams, history: Sequence[int] = ()) -> Any:
    """A new sampler chain for ``params`` (free it with ``llama_sampler_free``)."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    try:
        if params.logit_bias:
            add(chain, _logit_bias(n_vocab, params.logit_bias))
        if params.penalized:
            penalties = llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_LAST_N,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
            for token in history[-PENALTY_LAST_N:]:  # the prompt's latest tokens count too
                llama_cpp.llama_sampler_accept(penalties, token)
            add(chain, penalties)
        if params.grammar is not None:
            add(chain, _grammar(vocab, params.grammar))
        if params.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0:
                add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            add(chain, llama_cpp.llama_sampler_init_dist(seed))
    except BaseException:
        llama_cpp.llama_sampler_free(chain)  # frees the samplers added so far
        raise
    return chain


def _logit_bias(n_vocab: int, biases: Sequence[tuple[int, float]]) -> Any:
    import llama_cpp

    bad = next((tok for tok, _ in biases if not 0 <= tok < n_vocab), None)
    if bad is not None:
        raise InputError(
            f"'logit_bias' names token {bad}, but the model's vocabulary has ids 0 to {n_vocab - 1}"
        )
    # OpenAI: -100 bans the token; a finite -100 on a logit does not quite, so it is -inf here.
    values = [
        llama_cpp.llama_logit_bias(tok, float("-inf") if bias <= -100 else bias) for tok, bias in biases
    ]
    array = (llama_cpp.llama_logit_bias * len(values))(*values)
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(values), array)


def _grammar(vocab: Any, grammar: str) -> Any:
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:  # llama.cpp's parser wrote why to stderr (the server's log)
        first = grammar.strip().splitlines()[0][:80] if grammar.strip() else ""
        raise InputError(
            f"'grammar' is not a GBNF grammar llama.cpp can use (it needs a 'root ::= ...' rule, defined "
            f"rule names, quoted literals, no left recursion); it begins {first!r}"
        )
    return sampler


def token_logprob(logits: Any, token: int, top: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """The chosen ``token``'s log-probability under the model (softmax of the raw ``logits``, before
    temperature and the chain: what the model thinks, as llama-server reports), with the ``top``
    most likely tokens and theirs."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    shift = x.max()
    logz = shift + np.log(np.exp(x - shift).sum())
    alternatives: tuple[TokenLogprob, ...] = ()
    if top > 0:
        best = np.argpartition(-x, top - 1)[:top]
        best = best[np.argsort(-x[best], kind="stable")]
        alternatives = tuple(_entry(int(t), float(x[t] - logz), piece) for t in best)
    return _entry(token, float(x[token] - logz), piece, alternatives)


def _entry(
    token: int, logprob: float, piece: Callable[[int], bytes], top: tuple[TokenLogprob, ...] = ()
) -> TokenLogprob:
    raw = piece(token)
    return TokenLogprob(raw.decode("utf-8", "replace"), tuple(raw), max(logprob, -9999.0), top, token)


__all__ = ["build_chain", "token_logprob"]
