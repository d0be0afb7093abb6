"""`/infill` at keystroke rate: does the KV prefix make the next completion cheap?

An editor (llama.vim, llama.vscode) sends one `/infill` request per pause in typing: the whole
file around the cursor each time, the cursor a few characters further on. This script plays
that against a real `starchat serve` subprocess:

* a ~2,000-token source file, the cursor starting halfway through it;
* 20 streamed requests (llama.vim's body: input_prefix = the text before the cursor,
  input_suffix = the rest, n_predict 8), the cursor moving forward 3 characters each time
  (the text does not change: the user is "typing" what is already there);
* time to first token (TTFT) as the client sees it: request sent to first SSE chunk.

Prints the median TTFT of requests 2-20 over request 1's (target <= 0.2; llama.vim's README
reports recomputing 260 of 15,186 context tokens) and the server's own ``timings.prompt_n``
(tokens evaluated) per request.

Why it can work: in prefix-suffix-middle order the suffix comes after the prefix, so whatever
follows the cursor is re-evaluated on every keystroke. starchat keeps the suffix to at most
128 tokens (engine/prompting/fim.py, llama.cpp's n_batch/4 at our 512 batch) and cuts a long prefix
from its start in steps, so its first tokens (and the KV cache) stay put while the user
types: a keystroke costs the changed tail of the prefix + <= 128 suffix tokens + 3.

The model: the demo (SmolLM2) has no FIM tokens, and a tiny test model is so small that
HTTP and sampling dominate. So the script builds a random StarCoder2 with realistic layer
widths (converters/synthetic.py ``write_wide_starcoder2``: hidden 1024, FFN 4096, 8 layers,
~110M parameters; --quick: 2 layers, 10 requests), the real FIM tokens at their real ids,
converted by our converter to F16. Its output is noise, but prompt evaluation costs what a
small real model's does, and the ratio is what matters: a bigger model only makes request 1
dearer and the ratio smaller. Usage: ``python benchmarks/infill.py [--quick] [--keep DIR]``.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_model(folder: Path, n_layer: int) -> Path:
    from converters.convert import convert_checkpoint
    from converters.synthetic import write_wide_starcoder2

    out = folder / f"bench-starcoder2-{n_layer}l.gguf"
    if out.exists():
        return out
    ckpt = folder / f"ckpt-{n_layer}l"
    write_wide_starcoder2(ckpt, n_layer, hidden=1024, ff=4096, vocab="starcoder2")
    convert_checkpoint(ckpt, out, "f16")
    return out


def source_file(tokens: int) -> str:
    """Python-looking code of about ``tokens`` tokens (counted with the model's tokenizer)."""
    from converters.synthetic import build_tokenizer

    tok = build_tokenizer("none", vocab="starcoder2")
    lines: list[str] = []
    i = 0
    while True:
        lines += [
            f"def handler_{i}(request, limit={i % 7 + 1}):",
            f'    """Answer request {i} within the limit."""',
            f"    items = [x * {i % 5 + 2} for x in range(limit)]",
            "    if not items:",
            f"        raise ValueError('empty {i}')",
            "    return sum(items) / len(items)",
            "",
        ]
        i += 1
        text = "\n".join(lines) + "\n"
        if i % 4 == 0 and len(tok(text, add_special_tokens=False)["input_ids"]) >= tokens:
            return text


def start_server(model: Path, home: Path, ctx: int) -> tuple[subprocess.Popen, str]:
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "STARCHAT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "starchat_cli",
            "serve",
            "-m",
            str(model),
            "--port",
            str(port),
            "--ctx",
            str(ctx),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("serve never became healthy")


def one_request(base: str, prefix: str, suffix: str) -> tuple[float, dict]:
    """(TTFT in seconds, the final event) of one streamed llama.vim-style request."""
    import httpx

    body = {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "input_extra": [],
        "prompt": "",
        "n_predict": 8,
        "top_k": 40,
        "top_p": 0.90,
        "temperature": 0,
        "stream": True,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
    }
    started = time.perf_counter()
    ttft = None
    final: dict = {}
    with httpx.stream("POST", f"{base}/infill", json=body, timeout=600) as res:
        if res.status_code != 200:
            raise SystemExit(f"/infill answered {res.status_code}: {res.read().decode()}")
        for line in res.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if ttft is None:
                ttft = time.perf_counter() - started
            if event.get("stop"):
                final = event
    return (ttft if ttft is not None else time.perf_counter() - started), final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 layers, 10 requests: checks the script runs")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=2000, help="size of the source file in tokens")
    ap.add_argument("--step", type=int, default=3, help="characters the cursor moves per request")
    ap.add_argument("--keep", type=Path, default=None, help="build (and reuse) the model in this folder")
    args = ap.parse_args()
    n_layer = 2 if args.quick else 8
    n_requests = args.requests or (10 if args.quick else 20)

    with tempfile.TemporaryDirectory(prefix="starchat-bench-infill-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        model = build_model(folder, n_layer)
        text = source_file(args.tokens)
        print(
            f"model {model.name} ({model.stat().st_size / 1e6:.0f} MB, built in {time.perf_counter() - t0:.0f} s)"
        )
        proc, base = start_server(model, Path(tmp) / "home", ctx=4096)
        try:
            cursor = len(text) // 2
            rows = []
            for i in range(n_requests):
                ttft, final = one_request(base, text[:cursor], text[cursor:])
                t = final.get("timings", {})
                rows.append(
                    (ttft, t.get("prompt_n", 0), t.get("cache_n", 0), final.get("tokens_evaluated", 0))
                )
                print(
                    f"request {i + 1:2d}: cursor {cursor:5d}  ttft {ttft * 1000:7.1f} ms  "
                    f"evaluated {t.get('prompt_n', 0):5d} of {final.get('tokens_evaluated', 0):5d} "
                    f"(reused {t.get('cache_n', 0)}) in {t.get('prompt_ms', 0):7.1f} ms"
                )
                cursor += args.step
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    first = rows[0][0]
    rest = statistics.median(r[0] for r in rows[1:])
    evaluated = statistics.median(r[1] for r in rows[1:])
    print(
        f"\nmedian TTFT of requests 2-{n_requests}: {rest * 1000:.1f} ms; request 1: {first * 1000:.1f} ms; "
        f"ratio {rest / first:.3f} (target <= 0.2)"
    )
    print(f"tokens evaluated: request 1 {rows[0][1]}, later requests median {evaluated:.0f} of {rows[1][3]}")


if __name__ == "__main__":
    main()
