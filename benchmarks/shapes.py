"""Real-scale model files for the benchmarks: a catalog model's shapes with random weights.

    python benchmarks/shapes.py --list              # the shapes, their sizes and what is cached
    python benchmarks/shapes.py starcoder2-15b      # the file's path (written the first time: ~9.9 GB)
    python benchmarks/shapes.py starcoder2-15b --vocab ggml-vocab-starcoder.gguf   # its real tokenizer
    from shapes import path_for                     # in a benchmark (benchmarks/ on sys.path)
    path = path_for("starcoder2-3b")                # then `starchat ask -m PATH ...`

What the files hold (converters/real_shapes.py): the real layer count, widths, heads, context
length, RoPE theta, vocabulary size, special tokens at their real ids and chat template, in
llama.cpp's Q4_K_M mix of tensor types, with random weights: loading and every token cost what
the real model's do, and the text is noise. ``starcoder2-15b`` is also the shape of StarChat2-15B
and StarCoder2-15B-Instruct, ``starcoder-15b`` that of StarChat-alpha and -beta.

The tokenizer is a stand-in of the real size unless ``--vocab FILE.gguf`` (or
``STARCHAT_BENCH_VOCAB``, which every benchmark's ``--shape`` then uses) names a vocab-only GGUF
of the real one, such as llama.cpp's ``models/ggml-vocab-starcoder.gguf``.

Files live in ``$STARCHAT_BENCH_CACHE``, else ``$XDG_CACHE_HOME/starchat-bench``, else
``~/.cache/starchat-bench``: never in the repository, never used by the tests. A file is reused
only when the manifest written after it was complete names the same shape, generator and
vocabulary and the file still has that size and the GGUF magic; otherwise it is written again (through a temp
file renamed into place, so an interrupted run leaves nothing that looks whole).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GENERATOR = 1  # bump when the files' contents change, so caches are rewritten


def cache_dir() -> Path:
    env = os.environ.get("STARCHAT_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "starchat-bench"


def _files(name: str) -> tuple[Path, Path]:
    folder = cache_dir()
    return folder / f"{name}-Q4_K_M.gguf", folder / f"{name}-Q4_K_M.json"


def vocab_file() -> Path | None:
    """The vocab-only GGUF to take the tokenizer from (``STARCHAT_BENCH_VOCAB``), if any."""
    env = os.environ.get("STARCHAT_BENCH_VOCAB")
    if not env:
        return None
    path = Path(env).expanduser().resolve()
    if not path.is_file():
        raise SystemExit(f"STARCHAT_BENCH_VOCAB: no such file {path}")
    return path


def _manifest(name: str) -> dict:
    from converters.real_shapes import SHAPES

    vocab = vocab_file()
    source = f"{vocab} ({vocab.stat().st_size} bytes)" if vocab else "stand-in"
    return {"generator": GENERATOR, "shape": asdict(SHAPES[name]), "vocab": source}


def cached(name: str) -> Path | None:
    """The cached file of shape ``name`` if it is complete and current, else None."""
    path, manifest = _files(name)
    try:
        recorded = json.loads(manifest.read_text())
        with path.open("rb") as fh:
            magic = fh.read(4)
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    want = _manifest(name)
    if magic != b"GGUF" or recorded.get("bytes") != size or {k: recorded.get(k) for k in want} != want:
        return None
    return path


def _progress(label: str):
    state = {"shown": -1, "start": time.perf_counter()}

    def report(done: int, total: int) -> None:
        pct = done * 100 // max(total, 1)
        if pct // 10 != state["shown"] // 10 or done == total:
            state["shown"] = pct
            rate = done / 1e6 / max(time.perf_counter() - state["start"], 1e-9)
            print(f"  {label}: {pct:3d}% of {total / 1e9:.2f} GB ({rate:.0f} MB/s)", file=sys.stderr)

    return report


def path_for(name: str, *, quiet: bool = False) -> Path:
    """The GGUF of shape ``name`` (a key of converters.real_shapes.SHAPES), written on first use."""
    from converters.real_shapes import SHAPES, vocab_from_gguf, write_shape

    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    hit = cached(name)
    if hit is not None:
        return hit
    path, manifest = _files(name)
    manifest.unlink(missing_ok=True)  # the file about to be replaced is no longer the recorded one
    if not quiet:
        print(f"writing {path} (once; later runs reuse it) ...", file=sys.stderr)
    shape, vocab = SHAPES[name], vocab_file()
    tokens = vocab_from_gguf(vocab, shape) if vocab else None
    result = write_shape(shape, path, vocab=tokens, progress=None if quiet else _progress(name))
    record = {**_manifest(name), "bytes": result.n_bytes, "seconds": round(result.seconds, 1)}
    record.update(n_vocab=result.n_vocab, n_params=result.n_params, types=result.types)
    tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, manifest)  # the manifest appears only once the GGUF is complete and in place
    if not quiet:
        print(
            f"wrote {result.n_bytes / 1e9:.2f} GB in {result.seconds:.1f} s "
            f"({result.n_params / 1e9:.2f}B parameters, {result.types})",
            file=sys.stderr,
        )
    return path


def add_shape_option(parser: argparse.ArgumentParser) -> None:
    """``--shape NAME`` for a benchmark: a real-scale file instead of the demo model."""
    from converters.real_shapes import SHAPES

    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        help="a real-scale GGUF (random weights, real shapes; benchmarks/shapes.py) instead of the demo model",
    )


def main() -> None:
    from converters.real_shapes import SHAPES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shape", nargs="?", choices=sorted(SHAPES), help="write (if needed) and print its path")
    ap.add_argument("--list", action="store_true", help="list the shapes and what is cached")
    ap.add_argument(
        "--vocab", type=Path, help="a vocab-only GGUF of the real tokenizer (STARCHAT_BENCH_VOCAB)"
    )
    args = ap.parse_args()
    if args.vocab:
        os.environ["STARCHAT_BENCH_VOCAB"] = str(args.vocab)
    if args.list or not args.shape:
        print(f"cache: {cache_dir()}")
        for name, s in SHAPES.items():
            hit = cached(name)
            state = f"cached, {hit.stat().st_size / 1e9:.2f} GB" if hit else "not written"
            also = f"; also {s.stands_for}" if s.stands_for else ""
            print(
                f"  {name:<15} {s.arch:<10} {s.n_layer} layers, n_embd {s.n_embd}, {s.n_head}/{s.n_head_kv} "
                f"heads, ff {s.n_ff}, ctx {s.n_ctx}, vocab {s.vocab_size} ({state}{also})"
            )
        return
    print(path_for(args.shape))


if __name__ == "__main__":
    main()
