"""The one place that reaches past llama-cpp-python's public API into its ``Llama`` object.

    from starchat_cli.engine.llamacpp import internals

    cached = internals.tokens(llm)               # the token ids in sequence 0, as Llama records them
    internals.decode_rows(llm, [t, *draft])      # one batch, logits at every row (llama_get_logits)
    internals.drop_from(llm, n)                  # forget positions n.. (KV cells and the record)

Written against llama-cpp-python 0.3.36 (pyproject allows >=0.3.16,<0.4: these members have had
these names and meanings through the 0.3 series). ``Llama`` keeps a record of the sequence next to
llama.cpp's KV cache, and its public ``eval`` / ``generate`` offer no way to reuse a prefix the way
starchat's prompt cache does, to evaluate a batch with logits at every position, or to drop
rejected draft positions. So starchat keeps that record itself, through these members:

- ``n_tokens`` (a plain attribute): positions evaluated; ``Llama.eval`` starts at it and first
  removes every KV cell from it on. Reading it is the sequence's length; setting it lower rewinds
  (the next ``eval`` overwrites from there); after a state load it is set to the loaded length.
- ``input_ids`` (a numpy array of ``n_ctx`` ids; ``_input_ids`` is its first ``n_tokens``): the
  ids evaluated, which the prompt cache compares with the next prompt and saves with a state.
- ``_ctx`` (a ``LlamaContext``): ``kv_cache_seq_rm`` removes KV cells of sequence 0, and
  ``decode`` runs a batch, for drafted batches and dropping their rejected positions.
- ``_batch`` (the ``LlamaBatch`` of ``n_batch`` tokens made at load): ``set_batch(...,
  logits_all=True)`` asks for the logits of every row of a drafted batch, which ``eval`` does not
  (its ``logits_all`` is fixed when the model is created, and costs memory for every prompt).

Everything else (``ctx``, ``model``, ``n_ctx()``, ``n_vocab()``, ``eval``, ``tokenize``,
``n_batch``, the ``llama_cpp.llama_*`` C functions) is public API and used where it is needed.
A new llama-cpp-python that renames any of these breaks here and only here (tests/test_draft.py
and tests/test_prompt_cache.py exercise every function on the demo model).
"""

from __future__ import annotations

from typing import Any, Sequence


def n_past(llm: Any) -> int:
    """Positions of sequence 0 evaluated so far."""
    return int(llm.n_tokens)


def tokens(llm: Any) -> list[int]:
    """The ids of sequence 0 as the Llama object records them (the KV cache holds their cells)."""
    return llm.input_ids[: llm.n_tokens].tolist() if llm.n_tokens else []


def rewind(llm: Any, n: int) -> None:
    """Make the next ``eval`` start at position ``n`` (it drops the KV cells from there itself)."""
    llm.n_tokens = n


def drop_from(llm: Any, n: int) -> None:
    """Remove positions ``n`` and later of sequence 0 from the KV cache and from the record."""
    llm._ctx.kv_cache_seq_rm(0, n, -1)
    llm.n_tokens = n


def set_tokens(llm: Any, ids: Sequence[int]) -> None:
    """Record ``ids`` as sequence 0, once llama.cpp has loaded their KV cells from a saved state."""
    llm.input_ids[: len(ids)] = ids
    llm.n_tokens = len(ids)


def decode_rows(llm: Any, ids: Sequence[int]) -> None:
    """Evaluate ``ids`` at the end of sequence 0 in one batch asking for logits at every row
    (``llama_get_logits`` then has them in batch order); the record follows, as after ``eval``."""
    start, n = llm.n_tokens, len(ids)
    llm._ctx.kv_cache_seq_rm(0, start, -1)
    llm._batch.set_batch(batch=list(ids), n_past=start, logits_all=True)
    llm._ctx.decode(llm._batch)
    llm.input_ids[start : start + n] = ids
    llm.n_tokens = start + n


__all__ = ["decode_rows", "drop_from", "n_past", "rewind", "set_tokens", "tokens"]
