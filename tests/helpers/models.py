"""Model files for the tests.

write_tiny_gguf(tmp_path / "t.gguf")     # a small well-formed GGUF: header and one tensor
"""

from __future__ import annotations

from pathlib import Path


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
