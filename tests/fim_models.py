"""Tiny StarCoder / StarCoder2 GGUF files with the real FIM tokens at their real ids, for the FIM tests.

Built with transformers (converters/synthetic.py) and converted by our own converter, once per
test process (several test modules share them); removed when the process ends.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from converters.synthetic import TinySpec, build_checkpoint

SPECS = {
    # StarCoder (v1, gpt_bigcode) with StarChat's chat tokens, as starchat-alpha/beta have them.
    "starcoder": TinySpec("starcoder", chat="starchat", vocab="starcoder", n_ctx=1024, seed=21),
    # A StarCoder2 base model: no chat tokens, <repo_name> 5 and <file_sep> 6.
    "starcoder2": TinySpec("starcoder2", tied=True, chat="none", vocab="starcoder2", n_ctx=1024, seed=22),
}


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="starchat-fim-models-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def fim_checkpoint(name: str):
    """(folder, transformers tokenizer) of the tiny checkpoint ``name`` (a key of SPECS)."""
    folder = _root() / name
    _, tokenizer = build_checkpoint(folder, SPECS[name])
    return folder, tokenizer


@functools.cache
def fim_gguf(name: str) -> Path:
    """The tiny checkpoint ``name`` converted to an F32 GGUF."""
    from converters.convert import convert_checkpoint

    folder, _ = fim_checkpoint(name)
    out = _root() / f"tiny-{name}.gguf"
    convert_checkpoint(folder, out, "f32")
    return out
