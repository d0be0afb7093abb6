"""`starchat convert` speed and memory on a ~300M-parameter random StarCoder2 checkpoint.

Prints two ratios against their anchors:

* throughput: checkpoint bytes converted per second (bf16 -> f16, the common real case)
  over a plain ``shutil.copyfile`` of the same shard files, both fsynced, both starting
  from a cold page cache for their inputs. Target >= 0.5x.
* peak RSS of the converting process, in a fresh child (its VmHWM; ``resource.getrusage``
  where /proc is missing) over the
  largest single tensor in the checkpoint. Target <= 2x largest tensor + 200 MB.

Page cache: there is no portable way to drop the cache without root, so before every
timed run the script calls ``os.sync()`` and ``posix_fadvise(POSIX_FADV_DONTNEED)`` on
the shard files (and removes the previous output), which evicts their clean pages; the
copy and the conversion therefore both read from disk. Runs alternate (copy, convert,
copy, convert) and the best of each is reported, so a noisy neighbour on the disk hurts
both sides alike.

The checkpoint is written directly (safetensors header + data, an index, config.json and
a valid byte-level BPE tokenizer.json with 49,152 tokens), not through transformers, so it
takes seconds. Usage: ``python benchmarks/convert.py [--keep DIR] [--dtype bf16|f16|f32]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# ~300M parameters: 20 layers of hidden 1024 / ffn 4096, GQA 16 heads / 4 KV, untied 49k vocab.
CONFIG = {
    "architectures": ["Starcoder2ForCausalLM"],
    "model_type": "starcoder2",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 20,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "max_position_embeddings": 16384,
    "vocab_size": 49152,
    "norm_epsilon": 1e-5,
    "rope_theta": 100000.0,
    "use_bias": True,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu_pytorch_tanh",
    "sliding_window": 4096,
}
SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
DTYPE_BYTES = {"bf16": 2, "f16": 2, "f32": 4}
ST_DTYPE = {"bf16": "BF16", "f16": "F16", "f32": "F32"}


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"{p}.{norm}.weight"] = (h,)
            shapes[f"{p}.{norm}.bias"] = (h,)
        for name, rows, cols in (("q_proj", h, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, h)):
            shapes[f"{p}.self_attn.{name}.weight"] = (rows, cols)
            shapes[f"{p}.self_attn.{name}.bias"] = (rows,)
        shapes[f"{p}.mlp.c_fc.weight"] = (f, h)
        shapes[f"{p}.mlp.c_fc.bias"] = (f,)
        shapes[f"{p}.mlp.c_proj.weight"] = (h, f)
        shapes[f"{p}.mlp.c_proj.bias"] = (h,)
    shapes["model.norm.weight"] = (h,)
    shapes["model.norm.bias"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    return shapes


def random_block(dtype: str, n: int):
    """n random values (normal, std 0.02) as the stored bytes of ``dtype``."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32) * np.float32(0.02)
    if dtype == "f32":
        return x
    if dtype == "f16":
        return x.astype(np.float16)
    return (x.view(np.uint32) >> 16).astype(np.uint16)


def write_shard(path: Path, tensors: dict[str, tuple[int, ...]], dtype: str, block) -> None:
    size = DTYPE_BYTES[dtype]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {
            "dtype": ST_DTYPE[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + n * size],
        }
        offset += n * size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        start = 0
        for shape in tensors.values():
            n = 1
            for d in shape:
                n *= d
            while n > 0:  # slide through the random block so tensors differ
                take = min(n, len(block) - start)
                out.write(block[start : start + take].tobytes())
                n -= take
                start = (start + take) % (len(block) - 7)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the ByteLevel alphabet)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """A valid byte-level BPE: specials, the 256 byte symbols, then merges of symbol pairs."""
    alphabet = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    for ch in alphabet:
        vocab[ch] = len(vocab)
    merges: list[list[str]] = []
    for a in alphabet:
        for b in alphabet:
            if len(vocab) >= vocab_size:
                break
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
                merges.append([a, b])
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, s in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    (folder / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "add_bos_token": False,
                "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            }
        )
    )


def build_checkpoint(folder: Path, dtype: str) -> tuple[list[Path], int, int, int]:
    """Returns (shard paths, parameters, checkpoint bytes, largest tensor bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(CONFIG)
    names = list(shapes)
    size = DTYPE_BYTES[dtype]
    counts = {n: shapes[n][0] * (shapes[n][1] if len(shapes[n]) == 2 else 1) for n in names}
    total = sum(counts.values())
    # two shards of about equal bytes
    half, acc, split = total / 2, 0, len(names)
    for i, n in enumerate(names):
        acc += counts[n]
        if acc >= half:
            split = i + 1
            break
    parts = [names[:split], names[split:]]
    block = random_block(dtype, 16 * 1024 * 1024 + 7)
    shards, weight_map = [], {}
    for i, part in enumerate(parts):
        file = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        write_shard(folder / file, {n: shapes[n] for n in part}, dtype, block)
        shards.append(folder / file)
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total * size}, "weight_map": weight_map}, indent=1)
    )
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    write_tokenizer(folder, CONFIG["vocab_size"])
    return shards, total, total * size, max(counts.values()) * size


def evict(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache (no root needed)."""
    os.sync()
    for p in paths:
        if not p.exists():
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# Peak RSS is read from /proc/self/status (VmHWM), which belongs to the child's own address
# space: ru_maxrss survives exec on Linux and would report the forking parent's size.
PEAK = """
def peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

CHILD_COPY = (
    PEAK
    + """
import os, shutil, sys, time, json
srcs, dst = sys.argv[1:-1], sys.argv[-1]
t = time.perf_counter()
for i, s in enumerate(srcs):
    out = f"{dst}.{i}"
    shutil.copyfile(s, out)
    fd = os.open(out, os.O_RDONLY); os.fsync(fd); os.close(fd)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "maxrss": peak_rss()}))
"""
)

CHILD_CONVERT = (
    PEAK
    + """
import json, sys, time
import numpy, gguf  # imported before the baseline so it counts only the conversion's own memory
import converters.convert as conv
base = peak_rss()
t = time.perf_counter()
res = conv.convert_checkpoint(sys.argv[1], sys.argv[2], "f16", overwrite=True)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "maxrss": peak_rss(),
                  "baseline": base, "out_bytes": res.n_bytes}))
"""
)


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, check=False
    )
    if out.returncode != 0:
        sys.exit(f"child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="build (or reuse) the checkpoint in this folder and keep it")
    ap.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="checkpoint dtype")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="starchat-convert-bench-"))
    ckpt = root / f"starcoder2-300m-{args.dtype}"
    t = time.perf_counter()
    shards, n_params, ckpt_bytes, largest = build_checkpoint(ckpt, args.dtype)
    print(
        f"checkpoint: {n_params / 1e6:.0f}M parameters, {args.dtype}, {len(shards)} shards, "
        f"{ckpt_bytes / 1e6:.0f} MB, largest tensor {largest / 1e6:.0f} MB (built in {time.perf_counter() - t:.1f} s)"
    )
    out = root / "out-F16.gguf"
    copy_dst = root / "copy"
    copies, converts = [], []
    try:
        for _ in range(args.reps):
            for p in root.glob("copy.*"):
                p.unlink()
            evict(shards)
            copies.append(run_child(CHILD_COPY, *map(str, shards), str(copy_dst)))
            for p in root.glob("copy.*"):
                p.unlink()
            out.unlink(missing_ok=True)
            evict(shards)
            converts.append(run_child(CHILD_CONVERT, str(ckpt), str(out)))
    finally:
        for p in root.glob("copy.*"):
            p.unlink()
        out.unlink(missing_ok=True)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    copy_s = min(c["seconds"] for c in copies)
    conv_s = min(c["seconds"] for c in converts)
    peak = max(c["maxrss"] for c in converts)
    base = min(c["baseline"] for c in converts)
    ratio = (ckpt_bytes / conv_s) / (ckpt_bytes / copy_s)
    copy_times = ", ".join(f"{c['seconds']:.2f} s" for c in copies)
    conv_times = ", ".join(f"{c['seconds']:.2f} s" for c in converts)
    print(f"copy:    {copy_times}  -> {ckpt_bytes / copy_s / 1e6:.0f} MB/s")
    print(f"convert: {conv_times}  -> {ckpt_bytes / conv_s / 1e6:.0f} MB/s")
    print(
        f"throughput ratio (convert / copy): {ratio:.2f}x   target >= 0.5x   {'OK' if ratio >= 0.5 else 'MISSED'}"
    )
    budget = 2 * largest + 200e6
    print(
        f"peak RSS: {peak / 1e6:.0f} MB (interpreter + numpy + gguf before converting: {base / 1e6:.0f} MB) "
        f"= {peak / largest:.2f}x the largest tensor ({largest / 1e6:.0f} MB); "
        f"target <= 2x + 200 MB = {budget / 1e6:.0f} MB   {'OK' if peak <= budget else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
