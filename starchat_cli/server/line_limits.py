"""llama.cpp's two line limits on a native reply (``/infill``, ``/completion``): ``n_indent`` stops
at a later line indented less than that (an empty one included, that line left out);
``t_max_predict_ms`` stops at the first newline after that long. Either stop is stop reason
LENGTH (llama.cpp's "limit")."""

from __future__ import annotations

import time
from typing import Iterator

from starchat_cli.engine.contract import Generation, StopReason


def limit_lines(gen: Generation, n_indent: int, t_max_predict_ms: float) -> Generation:
    """``gen`` with llama.cpp's two line limits applied (see the module's docstring).

    A stop here is stop reason LENGTH (llama.cpp's "limit"); the inner generation is closed.
    """
    if n_indent <= 0 and t_max_predict_ms <= 0:
        return gen

    def chunks() -> Iterator[str]:
        started = None
        checking = False  # at the start of a line after the first: only whitespace seen
        pending = ""  # that whitespace, held back until the line's indent is known
        limited = False
        try:
            for chunk in gen:
                started = started if started is not None else time.perf_counter()
                out = []
                for ch in chunk:
                    if checking:
                        if ch in " \t":
                            pending += ch
                            continue
                        if len(pending) < n_indent:  # an empty line counts too, as in llama.cpp
                            out.append(pending)
                            pending, limited = "", True
                            break
                        out.append(pending)
                        pending, checking = "", ch == "\n"
                        out.append(ch)
                    else:
                        out.append(ch)
                        checking = ch == "\n" and n_indent > 0
                    if ch == "\n" and t_max_predict_ms > 0:
                        if (time.perf_counter() - started) * 1000 > t_max_predict_ms:
                            limited = True
                            break
                text = "".join(out)
                if text:
                    yield text
                if limited:
                    return
            if pending:
                yield pending
        finally:
            gen.close(StopReason.LENGTH if limited else None)

    return Generation(chunks(), gen.stats, gen.fit, prompt_text=gen.prompt_text, logprobs=gen.logprobs)


__all__ = ["limit_lines"]
