"""Only engine/llamacpp/internals.py reaches into llama-cpp-python's ``Llama`` object (its private
members and the sequence record it keeps), so a new llama-cpp-python breaks in one known place.

    python -m pytest tests/test_llama_internals.py
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "starchat_cli"
ADAPTER = PACKAGE / "engine" / "llamacpp" / "internals.py"
# The Llama object is ``llm`` (or the backend's ``_llm``) wherever starchat holds one.
REACH = re.compile(r"\b_?llm\.(_\w+|n_tokens|input_ids)\b")


def reaches(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if REACH.search(line)]


def test_only_the_adapter_reads_llama_internals():
    found = {
        str(path.relative_to(PACKAGE)): hits
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != ADAPTER and (hits := reaches(path.read_text(encoding="utf-8")))
    }
    assert found == {}
    assert reaches(ADAPTER.read_text(encoding="utf-8"))  # the adapter itself does


def test_a_reach_is_found():
    assert reaches("cached = list(llm._input_ids)\nllm.n_tokens = 3\nx = self._llm.input_ids[0]\n") == [
        "cached = list(llm._input_ids)",
        "llm.n_tokens = 3",
        "x = self._llm.input_ids[0]",
    ]
    assert reaches("n = entry.n_tokens\nllm.eval(tokens)\n") == []
