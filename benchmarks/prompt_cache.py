"""The persistent prompt cache, measured as a user meets it (run on an idle machine).

1. A ~7k-token file piped into `starchat ask --ctx 8192`, in separate processes with an empty
   cache: time to first token of the second call / the first (target <= 0.05), and of a
   different question about the same file / the first (target <= 0.1).
2. A 20-turn chat: the first reply after resuming it in a fresh engine (its state comes from
   disk) / the same reply as a warm turn in the engine that had the conversation in memory
   (target <= 1.5).
3. The cost of the save after an answer (ms) and the cache size per 1k tokens for the demo
   model, measured, and for StarChat2-15B on paper (40 layers x 4 KV heads x 128 x 2 x f16).

With ``--shape starcoder2-15b`` (``benchmarks/shapes.py --list``) every step runs on a real-scale
file (the model's shapes, random weights) instead of the demo model. Its prompt evaluation
runs at the real model's speed (a 15B shape reads about 8 tokens/s on two cores), so pass a
smaller ``--tokens`` there.

    python benchmarks/prompt_cache.py [--tokens 7000] [--turns 20] [--threads 2] [--shape NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def source_text(min_chars: int) -> str:
    parts, size = [], 0
    for path in sorted((ROOT / "starchat_cli").rglob("*.py")):
        text = path.read_text()
        parts.append(f"# {path.relative_to(ROOT)}\n{text}")
        size += len(text)
        if size >= min_chars:
            break
    return "\n".join(parts)


def ask(home: str, question: str, text: str, threads: int, model: str) -> dict:
    # Keep-alive 0: each ask is a process of its own that ends with its worker, so the second
    # ask's prompt comes from the prompt cache on disk (what this measures), not a warm worker.
    env = {**os.environ, "STARCHAT_HOME": home, "STARCHAT_KEEP_ALIVE": "0"}
    cmd = [sys.executable, "-m", "starchat_cli", "ask", "-m", model, "--ctx", "8192", "-t", "0", "-n", "8"]
    cmd += ["--threads", str(threads), "--json", question]
    started = time.perf_counter()
    res = subprocess.run(cmd, input=text.encode(), capture_output=True, env=env, cwd=ROOT, timeout=900)
    wall = time.perf_counter() - started
    if res.returncode != 0:
        sys.exit(res.stderr.decode())
    out = json.loads(res.stdout)
    out["wall"] = wall
    return out


def piped_file(tokens: int, threads: int, model: str) -> None:
    text = source_text(tokens * 4)
    with tempfile.TemporaryDirectory() as home:
        first = ask(home, "What does this code do?", text, threads, model)
        second = ask(home, "What does this code do?", text, threads, model)
        other = ask(home, "Which function here is the longest?", text, threads, model)
    f, s, o = first["stats"], second["stats"], other["stats"]
    print(f"piped file: {f['prompt_tokens']} prompt tokens")
    for name, st, run in (("first call", f, first), ("same again", s, second), ("other question", o, other)):
        print(
            f"  {name:<15} TTFT {st['ttft_seconds']:7.2f} s  cached {st['cached_tokens']:>5} "
            f"({st['cached_from'] or '-'})  process {run['wall']:.2f} s"
        )
    print(f"  same text on the second call: {second['text'] == first['text']}")
    print(f"  ratio same / first:  {s['ttft_seconds'] / f['ttft_seconds']:.4f}  (target <= 0.05)")
    print(f"  ratio other / first: {o['ttft_seconds'] / f['ttft_seconds']:.4f}  (target <= 0.1)")


def chat(turns: int, threads: int, model_name: str) -> None:
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message
    from starchat_cli.models.store import Store
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import engine_for

    with tempfile.TemporaryDirectory() as home:
        os.environ["STARCHAT_HOME"] = home
        settings = Settings(ctx=8192, threads=threads)
        model = Store().resolve(model_name)
        params = GenerationParams(max_tokens=48, temperature=0.0)
        warm = engine_for(model, settings)
        warm.load()
        history: list[Message] = []
        for i in range(turns):
            history.append(
                Message("user", f"Question {i + 1}: write a one-line Python expression for task {i}.")
            )
            gen = warm.generate(history, params)
            history.append(Message("assistant", "".join(gen)))
            warm.persist()
        history.append(Message("user", "Now summarise everything above in one sentence."))
        fresh = engine_for(model, settings)  # the resumed chat: a new context, its state on disk
        fresh.load()
        resumed = fresh.generate(history, params)
        resumed_text = "".join(resumed)
        started = time.perf_counter()
        fresh.persist()
        save_ms = (time.perf_counter() - started) * 1000
        hot = warm.generate(history, params)
        hot_text = "".join(hot)
        folder = Path(home) / "cache" / "prompt-cache"
        sizes = [
            (json.loads(p.read_text())["size"], len(json.loads(p.read_text())["tokens"]))
            for p in folder.glob("*.json")
        ]
    r, h = resumed.stats, hot.stats
    print(f"chat: {turns} turns, {r.prompt_tokens} prompt tokens for the next reply")
    print(f"  resumed (fresh engine) TTFT {r.ttft_seconds:.3f} s, cached {r.cached_tokens} ({r.cached_from})")
    print(f"  warm (in memory)       TTFT {h.ttft_seconds:.3f} s, cached {h.cached_tokens} ({h.cached_from})")
    print(f"  same text: {resumed_text == hot_text}")
    print(f"  ratio resumed / warm: {r.ttft_seconds / h.ttft_seconds:.2f}  (target <= 1.5)")
    print(f"  save after the answer: {save_ms:.0f} ms for {r.prompt_tokens + r.generated_tokens} tokens")
    if sizes:
        per_k = sum(s for s, _ in sizes) / sum(n for _, n in sizes) * 1000
        print(f"  cache size per 1k tokens, {model.name} (measured): {per_k / 1e6:.1f} MB")
    per_k_15b = 40 * 4 * 128 * 2 * 2 * 1000
    print(f"  cache size per 1k tokens, StarChat2-15B (on paper): {per_k_15b / 1e6:.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=7000, help="size of the piped file, in tokens (about)")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    from shapes import add_shape_option, path_for

    add_shape_option(ap)
    args = ap.parse_args()
    model = str(path_for(args.shape)) if args.shape else "demo"
    piped_file(args.tokens, args.threads, model)
    chat(args.turns, args.threads, model)


if __name__ == "__main__":
    main()
