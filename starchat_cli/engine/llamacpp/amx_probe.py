"""The AMX probe's child process: does llama.cpp's matmul work in this build, on this CPU?

    python -m starchat_cli.engine.llamacpp.amx_probe default    # llama.cpp's own buffer choice (AMX first)
    python -m starchat_cli.engine.llamacpp.amx_probe drop-amx   # every extra buffer type but AMX (CPU repack kept)
    python -m starchat_cli.engine.llamacpp.amx_probe no-extra   # no extra buffer types at all (--no-repack)

It writes a tiny llama-shaped GGUF with random Q4_0, Q4_1 and Q8_0 weights (the types llama.cpp
hands to its AMX kernels, with shapes those kernels accept), loads it the way starchat would in
that mode, evaluates a 32-token batch (the tile kernels run for batches of more than one row, which
is where llama.cpp's AMX matmul faults) and three single tokens on two threads (worker threads
need their own tile permission), and prints one JSON line. A crash ends this process, never the
caller's: :mod:`starchat_cli.engine.llamacpp.amx` reads the exit status.
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
import tempfile
import time
from pathlib import Path

N_EMBD = 256  # a multiple of the AMX tile sizes and of 32-value quant blocks
N_FF = 512
N_VOCAB = 256
N_HEAD = 2
PROMPT = 32


def write_probe_model(path: Path, seed: int = 7) -> Path:
    """A one-layer llama GGUF with random quantized weights and no tokenizer (ids only)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    q = gguf.GGMLQuantizationType
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_block_count(1)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_vocab_size(N_VOCAB)
    writer.add_tokenizer_model("none")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)

    def weight(name: str, rows: int, cols: int, qtype) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(N_EMBD, dtype=np.float32))

    weight("token_embd.weight", N_VOCAB, N_EMBD, q.Q8_0)
    norm("output_norm.weight")
    weight("output.weight", N_VOCAB, N_EMBD, q.Q8_0)
    norm("blk.0.attn_norm.weight")
    norm("blk.0.ffn_norm.weight")
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        weight(f"blk.0.{name}.weight", N_EMBD, N_EMBD, q.Q4_0)
    weight("blk.0.ffn_gate.weight", N_FF, N_EMBD, q.Q4_1)
    weight("blk.0.ffn_up.weight", N_FF, N_EMBD, q.Q8_0)
    weight("blk.0.ffn_down.weight", N_EMBD, N_FF, q.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def run(mode: str, workdir: Path) -> dict:
    """Load the probe model in ``mode`` and evaluate a batch and three tokens; what was seen."""
    import llama_cpp

    from starchat_cli.engine.llamacpp.amx import prepare_mode

    model_path = write_probe_model(workdir / "probe.gguf")
    lines: list[bytes] = []

    @llama_cpp.llama_log_callback
    def keep(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text)

    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    use_extra = prepare_mode(mode)
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = use_extra
    started = time.perf_counter()
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), mparams)
    if not model:
        raise RuntimeError("the probe model did not load")
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 128
    cparams.n_batch = 64
    cparams.n_ubatch = 64
    cparams.n_threads = cparams.n_threads_batch = 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("the probe context was not created")
    tokens = [(i * 37 + 11) % N_VOCAB for i in range(PROMPT)]
    batch = (llama_cpp.llama_token * PROMPT)(*tokens)
    if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(batch, PROMPT)) != 0:
        raise RuntimeError("llama_decode failed on the prompt batch")
    for tok in (3, 5, 7):
        one = (llama_cpp.llama_token * 1)(tok)
        if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) != 0:
            raise RuntimeError("llama_decode failed on a single token")
    logits = llama_cpp.llama_get_logits_ith(ctx, -1)
    finite = all(math.isfinite(logits[i]) for i in range(N_VOCAB))
    seconds = time.perf_counter() - started
    log = b"".join(lines).decode("utf-8", "replace")
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return {
        "ok": finite,
        "mode": mode,
        "amx_buffer": "AMX model buffer" in log,
        "repack_buffer": "CPU_REPACK model buffer" in log,
        "seconds": round(seconds, 3),
    }


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "default"
    with tempfile.TemporaryDirectory(prefix="starchat-amx-probe-") as tmp:
        try:
            result = run(mode, Path(tmp))
        except Exception as exc:  # reported to the parent as data, not a traceback
            result = {"ok": False, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result.get("ok") else 1


if __name__ == "__main__":  # pragma: no cover - run as a child process
    raise SystemExit(main(sys.argv))
