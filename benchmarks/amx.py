"""AMX: what the probe costs, and how fast models run in each load mode against a build without AMX.

    python benchmarks/amx.py                                  # the probe's cost; this build's modes
    python benchmarks/amx.py --python-b /path/to/venv/bin/python --rounds 5
    python benchmarks/amx.py --model some.gguf --synthetic-q4_0 1024x12

On a CPU with AMX, starchat loads models in one of three modes (engine/llamacpp/amx.py): ``default``
(llama.cpp's own choice, AMX first), ``drop-amx`` (the fallback where AMX crashes: the CPU
repack layouts kept) or ``no-extra`` (no extra weight layouts). This script times prompt
evaluation and decoding in each mode, each run in its own child process (a mode that crashes
is reported, not fatal), and, with ``--python-b``, the same in another interpreter whose
llama-cpp-python was built without AMX (``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON ..."``):
the anchor, printed as ratios. Runs alternate between the sides so drift hits all alike; medians.
``--synthetic-q4_0 EMBDxLAYERS`` writes a llama-shaped GGUF with random Q4_0 weights (the type
CPU repack takes), since the demo model's Q4_1 has no repack layout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import ctypes, json, sys, time
import llama_cpp
model_path, mode, n_prompt, n_gen, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
use_extra = True
if mode == "drop-amx":
    from starchat_cli.engine.llamacpp.ggml_bufts import drop_cpu_buffer_type
    use_extra = drop_cpu_buffer_type("AMX")
elif mode == "no-extra":
    use_extra = False
lines = []
@llama_cpp.llama_log_callback
def keep(level, text, data):
    lines.append(text)
llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()
mp = llama_cpp.llama_model_default_params()
mp.use_extra_bufts = use_extra
model = llama_cpp.llama_model_load_from_file(model_path.encode(), mp)
cp = llama_cpp.llama_context_default_params()
cp.n_ctx = max(512, n_prompt + n_gen + 8); cp.n_batch = cp.n_ubatch = 512
cp.n_threads = cp.n_threads_batch = threads
cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
ctx = llama_cpp.llama_init_from_model(model, cp)
n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
toks = [(i * 7919 + 13) % min(n_vocab, 30000) + 100 for i in range(n_prompt)]
arr = (llama_cpp.llama_token * n_prompt)(*toks)
t0 = time.perf_counter()
assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, n_prompt)) == 0
t1 = time.perf_counter()
tok = 42
for _ in range(n_gen):
    one = (llama_cpp.llama_token * 1)(tok)
    assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
    logits = llama_cpp.llama_get_logits_ith(ctx, -1)
    tok = max(range(0, n_vocab, 97), key=lambda i: logits[i])
t2 = time.perf_counter()
log = b"".join(lines).decode("utf-8", "replace")
print(json.dumps({"prompt_tps": n_prompt / (t1 - t0), "decode_tps": n_gen / (t2 - t1),
                  "amx": "AMX model buffer" in log, "repack": "CPU_REPACK model buffer" in log}))
"""


def run_worker(python: str, model: Path, mode: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [python, "-c", WORKER, str(model), mode, str(args.prompt), str(args.gen), str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, timeout=600, env=env)
    if res.returncode < 0:
        return {"crash": f"signal {-res.returncode}"}
    if res.returncode != 0:
        return {"crash": res.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]}
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


def probe_cost(rounds: int) -> list[float]:
    """Whole probe as starchat runs it the first time: every mode it needs, each a child."""
    sys.path.insert(0, str(REPO))
    from starchat_cli.engine.llamacpp.amx import probe

    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        verdict = probe()
        times.append(time.perf_counter() - t0)
    print(
        f"probe verdict here: works={verdict['works']} load_mode={verdict['load_mode']} ({verdict['detail']})"
    )
    return times


def synthetic_model(spec: str, folder: Path) -> Path:
    """A llama-shaped GGUF with random Q4_0 weights: EMBDxLAYERS, ffn 4x, 128-dim heads."""
    import gguf
    import numpy as np

    embd, layers = (int(x) for x in spec.lower().split("x"))
    path = folder / f"synthetic-q4_0-{embd}x{layers}.gguf"
    if path.exists():
        return path
    rng = np.random.default_rng(1)
    q = gguf.GGMLQuantizationType
    ff, heads, vocab = 4 * embd, embd // 128, 32000
    w = gguf.GGUFWriter(str(path) + ".tmp", "llama")
    w.add_context_length(4096)
    w.add_embedding_length(embd)
    w.add_feed_forward_length(ff)
    w.add_block_count(layers)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(128)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("none")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)

    def mat(name, rows, cols):
        data = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(data, q.Q4_0), raw_dtype=q.Q4_0)

    mat("token_embd.weight", vocab, embd)
    w.add_tensor("output_norm.weight", np.ones(embd, dtype=np.float32))
    mat("output.weight", vocab, embd)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            mat(f"blk.{i}.{name}.weight", embd, embd)
        mat(f"blk.{i}.ffn_gate.weight", ff, embd)
        mat(f"blk.{i}.ffn_up.weight", ff, embd)
        mat(f"blk.{i}.ffn_down.weight", embd, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(str(path) + ".tmp", path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF (default: the demo model)")
    parser.add_argument(
        "--synthetic-q4_0", metavar="EMBDxLAYERS", help="write and use a random Q4_0 llama GGUF"
    )
    parser.add_argument(
        "--python-b", help="an interpreter whose llama-cpp-python has no AMX kernels (the anchor)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=256, help="prompt tokens, one batch (default 256)")
    parser.add_argument("--gen", type=int, default=64, help="tokens decoded one at a time (default 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe-rounds", type=int, default=3)
    args = parser.parse_args()

    if args.probe_rounds:
        t = probe_cost(args.probe_rounds)
        print(
            f"probe cost: median {statistics.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f}; once per build + CPU)"
        )
    if args.synthetic_q4_0:
        folder = Path(tempfile.gettempdir()) / "starchat-bench"
        folder.mkdir(exist_ok=True)
        model = synthetic_model(args.synthetic_q4_0, folder)
    elif args.model:
        model = args.model
    else:
        sys.path.insert(0, str(REPO))
        from starchat_cli.models.store import demo_model_path

        model = demo_model_path()
    sides = [("this build", sys.executable, m) for m in ("default", "drop-amx", "no-extra")]
    if args.python_b:
        sides.append(("build B (no AMX)", args.python_b, "default"))
    results: dict[tuple[str, str], list[dict]] = {(name, mode): [] for name, _, mode in sides}
    for _ in range(args.rounds):
        for name, python, mode in sides:
            results[(name, mode)].append(run_worker(python, model, mode, args))
    print(f"model {model.name}, prompt {args.prompt} tokens, {args.gen} decoded, {args.threads} threads")
    anchor = None
    if args.python_b:
        runs = results[("build B (no AMX)", "default")]
        if all("crash" not in r for r in runs):
            anchor = (
                statistics.median(r["prompt_tps"] for r in runs),
                statistics.median(r["decode_tps"] for r in runs),
            )
    for (name, mode), runs in results.items():
        crashed = [r["crash"] for r in runs if "crash" in r]
        if crashed:
            print(f"  {name:18} {mode:9} crashed: {crashed[0]}")
            continue
        p = statistics.median(r["prompt_tps"] for r in runs)
        d = statistics.median(r["decode_tps"] for r in runs)
        where = "AMX" if runs[0]["amx"] else "CPU_REPACK" if runs[0]["repack"] else "plain CPU"
        ratio = f"  ratio to B: prompt {p / anchor[0]:.2f}, decode {d / anchor[1]:.2f}" if anchor else ""
        print(
            f"  {name:18} {mode:9} weights in {where:10} prompt {p:8.1f} tok/s  decode {d:6.1f} tok/s{ratio}"
        )


if __name__ == "__main__":
    main()
