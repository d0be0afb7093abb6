"""Model files for the tests: tiny GGUFs, and tiny random checkpoints built once per session.

    write_tiny_gguf(tmp_path / "t.gguf")                 # a small well-formed GGUF: header and one tensor
    tiny_models.checkpoint(TinySpec("starcoder"))        # (the session fixture) a Checkpoint: dir, model, tokenizer
    tiny_models.gguf(TinySpec("starcoder"), "f16")       # the same checkpoint converted by our converter
    tiny_models.fim_gguf("starcoder2")                   # the real FIM tokens at their real ids

What ``tiny_models`` hands out is shared by every test of the session: copy it before changing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.synthetic import TinySpec

STARCODER = TinySpec("starcoder", tied=False, chat="starchat")  # StarChat's chat tokens, untied
# StarChat2's chat tokens, tied embeddings, saved as an index and several safetensors shards.
STARCODER2_SHARDED = TinySpec("starcoder2", tied=True, chat="chatml", seed=11)
SHARDED = {"max_shard_size": "400KB"}
# The FIM tests' models: the real leading special tokens of each vocabulary at their real ids.
FIM_SPECS = {
    # StarCoder (v1, gpt_bigcode) with StarChat's chat tokens, as starchat-alpha/beta have them.
    "starcoder": TinySpec("starcoder", chat="starchat", vocab="starcoder", n_ctx=1024, seed=21),
    # A StarCoder2 base model: no chat tokens, <repo_name> 5 and <file_sep> 6.
    "starcoder2": TinySpec("starcoder2", tied=True, chat="none", vocab="starcoder2", n_ctx=1024, seed=22),
}


def write_tiny_gguf(path: Path, *, arch: str = "llama", template: str | None = None) -> Path:
    """A small but well-formed GGUF (header + one tensor) written with the gguf library."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(256)
    writer.add_block_count(1)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@dataclass
class Checkpoint:
    dir: Path
    spec: TinySpec
    model: Any  # the transformers model, for reference logits
    tokenizer: Any  # its PreTrainedTokenizerFast


class TinyModels:
    """Tiny random checkpoints (converters/synthetic.py) and their GGUFs under ``root``, each
    built the first time a test asks for it (a spec and save options name one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._checkpoints: dict[str, Checkpoint] = {}
        self._ggufs: dict[tuple[str, str, str], Path] = {}

    def checkpoint(self, spec: TinySpec, **save: Any) -> Checkpoint:
        """``spec`` saved by ``build_checkpoint(folder, spec, **save)``."""
        from converters.synthetic import build_checkpoint

        key = repr((spec, sorted(save.items())))
        if key not in self._checkpoints:
            folder = self.root / f"{spec.arch}-{len(self._checkpoints)}"
            model, tokenizer = build_checkpoint(folder, spec, **save)
            self._checkpoints[key] = Checkpoint(folder, spec, model, tokenizer)
        return self._checkpoints[key]

    def gguf(self, spec: TinySpec, outtype: str = "f32", *, name: str = "", **save: Any) -> Path:
        """That checkpoint converted to ``outtype``, in ``NAME.gguf`` when a name is given."""
        from converters.convert import convert_checkpoint

        ckpt = self.checkpoint(spec, **save)
        key = (str(ckpt.dir), outtype, name)
        if key not in self._ggufs:
            out = self.root / f"{name or f'{ckpt.dir.name}-{outtype}'}.gguf"
            convert_checkpoint(ckpt.dir, out, outtype)
            self._ggufs[key] = out
        return self._ggufs[key]

    def fim_gguf(self, name: str) -> Path:
        """``tiny-NAME.gguf``, F32, for a key of FIM_SPECS."""
        return self.gguf(FIM_SPECS[name], "f32", name=f"tiny-{name}")
