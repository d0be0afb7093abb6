"""Where a drafted batch is exact: its rows bit for bit the logits of one-token steps.

    exact = ExactBatches(decoder)
    k = exact.room(token, draft)     # draft tokens that may be verified in one batch here (0: a plain step)

Drafted greedy text equals plain text only if verifying [token + draft] in one batch gives,
row by row, the very logits that one-token decoding gives. On llama.cpp's CPU backend that holds
for batches below 64 tokens (the tile size of its flash attention) while the attention sees fewer
than 512 KV cells; from 512 cells on, a one-token step with more than one thread splits the KV
cells across the threads and adds the partial sums in another order (ggml's split-KV path in
``ggml_compute_forward_flash_attn_ext_f16``), while a batch does not. The difference is small
(|logit| up to ~1 on the demo model) but flips near-ties, so greedy text changes. Without flash
attention, batches differ from one-token steps at every length.

So nothing here assumes: at the first batch in each attention view (llama.cpp pads the cells
attention sees to 256: ``get_n_kv`` in llama-kv-cache.cpp, llama-cpp-python 0.3.36), one check
decodes two tokens one at a time, then as one batch, compares the logits bit for bit and removes
all of it from the KV cache again (three token-evaluations, once per 256 tokens of context). A
batch is drafted only within a view whose check passed and never across a view's end; in a
view whose check failed every step is a plain one-token step.
"""

from __future__ import annotations

from typing import Sequence

from starchat_cli.engine.speculative.decoder import Decoder

KV_VIEW_PAD = 256  # llama.cpp rounds the KV cells attention reads up to a multiple of this


class ExactBatches:
    """Per loaded model (its context and threads): which attention views verify drafts exactly."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.verdicts: dict[int, bool] = {}  # attention view (cells) -> batches exact there

    def view(self, cells: int) -> int:
        """The KV cells attention reads when ``cells`` are in use (llama.cpp's padding)."""
        padded = max(KV_VIEW_PAD, -(-cells // KV_VIEW_PAD) * KV_VIEW_PAD)
        return min(self.decoder.n_ctx, padded)

    def room(self, token: int, draft: Sequence[int]) -> int:
        """How many of ``draft`` may be verified in one batch [token, *draft] at the current
        position with the reply unchanged: 0 means take a plain one-token step."""
        start = self.decoder.n_past
        if not draft or start + 2 > self.decoder.n_ctx:
            return 0
        view = self.view(start + 2)
        k = min(len(draft), view - start - 1)  # the batch ends inside this view
        if k < 1:
            return 0
        exact = self.verdicts.get(view)
        if exact is None:
            exact = self.verdicts[view] = self.check([token, draft[0]])
        return k if exact else 0

    def failed_here(self) -> bool:
        """The check for the current position's view ran and failed."""
        return self.verdicts.get(self.view(self.decoder.n_past + 2)) is False

    def check(self, tokens: Sequence[int]) -> bool:
        """Decode ``tokens`` one at a time, then as one batch, at the current position; whether
        every row is bit-identical. The sequence is left as it was."""
        import numpy as np

        decoder = self.decoder
        start = decoder.n_past
        singles = []
        try:
            for token in tokens:
                decoder.decode_one(token)
                singles.append(decoder.last_logits())
            decoder.truncate(start)
            rows = decoder.decode_batch(list(tokens))
        finally:
            decoder.truncate(start)
        return all(np.array_equal(row, one) for row, one in zip(rows, singles))


__all__ = ["KV_VIEW_PAD", "ExactBatches"]
