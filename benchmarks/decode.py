"""Decode speed of ``starchat ask`` relative to llama.cpp driven directly through ctypes.

What it measures
----------------
Tokens per second while decoding (generating) on the demo model, two ways:

* starchat: the real CLI as a subprocess,
  ``starchat ask -m demo -t 0 --threads T --max-tokens N --json "<prompt>"``; the figure is
  ``(generated_tokens - 1) / decode_seconds`` from the ``stats`` of its JSON output, i.e.
  from the first generated token to the last, excluding the first token (which pays for
  the prompt).
* raw: a fresh subprocess of this script that uses only llama-cpp-python's low-level
  ctypes API (``llama_model_load_from_file``, ``llama_init_from_model``,
  ``llama_tokenize``, ``llama_decode``, a greedy sampler chain, ``llama_token_to_piece``).
  It tokenizes exactly the prompt text the CLI renders (ChatML with the demo's default
  system prompt), decodes it, then generates exactly as many tokens G as the CLI did,
  greedily and ignoring end-of-generation tokens, converting each token to its piece as
  a real application would. Same file, same thread count (``n_threads`` and
  ``n_threads_batch``), ``n_ctx`` 4096, ``n_batch`` 512, otherwise llama.cpp's default
  context parameters. Timed from the first sampled token to the last: (G - 1) / seconds.

``--shape starcoder2-15b`` (or another name of ``benchmarks/shapes.py --list``) runs both
sides on a real-scale file instead: the model's real shapes with random weights (written once
into the benchmark cache), prompted through the file's own chat template with no system
prompt, as ``starchat ask -m FILE`` does.

Both sides run in their own fresh process (model load not timed). An untimed warm-up
run of the CLI first finds G and fills the page cache; then ``--rounds`` rounds
(default 3) each run both sides, alternating which one goes first so neither profits
from the order.

How to read the output
----------------------
One line per run (tokens/s, tokens, decode and prompt times, and how much CPU other
processes used meanwhile: ggml threads wait for each other at every graph step, so a
run that shares the cores with other work can be many times slower; such runs are
flagged "noisy"). Then the median tokens/s of each side and
``RATIO = starchat / raw`` (ratio of the medians), plus the median of the per-round
ratios, which is less sensitive to the machine drifting between rounds. 1.00 means
starchat's engine adds no overhead over calling llama.cpp directly; the target is
>= 0.97. Run-to-run noise on a small VM is several percent, so use more ``--rounds``
before reading much into 0.95 vs 1.00. A lower ratio points at per-token Python
overhead in starchat_cli/core/engine.py (or in llama-cpp-python's ``Llama`` class it
drives), or at a context parameter that differs between the two. Flash attention is
one such parameter: starchat turns it on (the ``Llama`` class only knows on/off), the
raw side uses llama.cpp's default, auto, which picks on for the CPU;
``--raw-flash-attn off|on`` pins the raw side to compare. The run also checks that both
sides see the same number of prompt tokens and says whether they produced the same text
(greedy decoding does, unless the two contexts compute slightly different logits, as
flash attention on vs off does).

Timing figures are printed, never asserted on.

    python benchmarks/decode.py [--rounds 3] [--max-tokens 256] [--threads T] [--shape NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

try:
    import resource
except ImportError:  # Windows: no CPU-noise figures
    resource = None  # type: ignore[assignment]

DEFAULT_PROMPT = "Write a long, detailed Python tutorial about classes, with many code examples."
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}  # llama_flash_attn_type


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def rendered_prompt(prompt: str, shape: str | None = None) -> str:
    """The exact text `starchat ask` sends: for the demo, ChatML with its default system prompt;
    for a shape's file, the file's template (the shape's format) and no system prompt."""
    from starchat_cli.engine.prompting.formats import ChatMLFormat, Message, get_format
    from starchat_cli.models.catalog import CATALOG

    if shape is not None:
        from converters.real_shapes import SHAPES

        return get_format(SHAPES[shape].prompt_format).render([Message("user", prompt)])
    system = CATALOG["demo"].default_system
    return ChatMLFormat().render([Message("system", system), Message("user", prompt)])


# -- machine noise -------------------------------------------------------------------------


class CpuMeter:
    """CPU time used by *other* processes (and stolen by the hypervisor) while a run lasts.

    ggml's worker threads wait for each other at every step of the graph, so a decode with
    as many threads as cores slows down badly when anything else wants a core. This tells
    such runs apart: foreign = machine busy time - this process's and its children's time.
    Linux only (/proc/stat); elsewhere it reports nothing.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ncpu = os.cpu_count() or 1
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float, float] | None:
        if resource is None:
            return None
        try:
            with open("/proc/stat") as fh:
                fields = [int(x) for x in fh.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            own += ru.ru_utime + ru.ru_stime
        return float(user + nice + system + irq + softirq), float(steal), own, time.perf_counter()

    def stop(self) -> tuple[str, bool]:
        """("other load x%, steal y%", whether that is enough to distort the run)."""
        end = self._snapshot()
        if self.start is None or end is None:
            return "", False
        busy = (end[0] - self.start[0]) / self.tick
        steal = (end[1] - self.start[1]) / self.tick
        own = end[2] - self.start[2]
        capacity = (end[3] - self.start[3]) * self.ncpu
        foreign = max(0.0, busy - own) / capacity * 100
        stolen = steal / capacity * 100
        noisy = foreign + stolen > 10
        flag = "  << noisy: something else was using the CPU" if noisy else ""
        return f"other load {foreign:.0f}%, steal {stolen:.0f}%{flag}", noisy


# -- starchat side ------------------------------------------------------------------------


def starchat_command() -> list[str]:
    exe = shutil.which("starchat")
    return [exe] if exe else [sys.executable, "-m", "starchat_cli"]


def run_starchat(prompt: str, threads: int, max_tokens: int, model: str = "demo") -> dict:
    cmd = [
        *starchat_command(),
        "ask",
        "-m",
        model,
        "-t",
        "0",
        "--threads",
        str(threads),
        "--max-tokens",
        str(max_tokens),
        "--keep-alive",
        "0",  # through a model worker that ends with the call: no process left behind
        "--json",
        prompt,
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"starchat failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    payload = json.loads(proc.stdout)
    stats = payload["stats"]
    generated = int(stats["generated_tokens"])
    seconds = float(stats["decode_seconds"])
    return {
        "prompt_tokens": int(stats["prompt_tokens"]),
        "generated_tokens": generated,
        "decode_seconds": seconds,
        "tokens_per_second": (generated - 1) / seconds if generated > 1 and seconds > 0 else 0.0,
        "reported_tokens_per_second": float(stats["tokens_per_second"]),
        "ttft_seconds": float(stats["ttft_seconds"]),
        "stop_reason": stats.get("stop_reason", ""),
        "text": payload.get("text", ""),
    }


# -- raw side (runs in a subprocess: python decode.py --raw-worker ...) ----------------------


def raw_worker(
    model_path: str, prompt: str, threads: int, n_generate: int, flash_attn: str, shape: str | None
) -> dict:
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        pass

    raw_worker.log_callback = quiet  # a ctypes callback must outlive its use
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()

    from starchat_cli.engine.llamacpp.amx import amx_status, prepare_mode

    mparams = llama_cpp.llama_model_default_params()
    # the weight buffers starchat uses on this machine (no AMX where its matmul crashes)
    mparams.use_extra_bufts = prepare_mode(amx_status("auto").load_mode)
    model = llama_cpp.llama_model_load_from_file(model_path.encode("utf-8"), mparams)
    if not model:
        raise SystemExit(f"raw: cannot load {model_path}")
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 4096
    cparams.n_batch = 512
    cparams.n_ubatch = 512
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    cparams.flash_attn_type = FLASH_ATTN[flash_attn]
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit("raw: cannot create the context")
    vocab = llama_cpp.llama_model_get_vocab(model)

    text = rendered_prompt(prompt, shape).encode("utf-8")
    capacity = len(text) + 16
    tokens = (llama_cpp.llama_token * capacity)()
    n_prompt = llama_cpp.llama_tokenize(vocab, text, len(text), tokens, capacity, False, True)
    if n_prompt < 0:
        capacity = -n_prompt
        tokens = (llama_cpp.llama_token * capacity)()
        n_prompt = llama_cpp.llama_tokenize(vocab, text, len(text), tokens, capacity, False, True)
    if n_prompt <= 0:
        raise SystemExit("raw: tokenization failed")

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())

    token_size = ctypes.sizeof(llama_cpp.llama_token)
    t0 = time.perf_counter()
    for start in range(0, n_prompt, cparams.n_batch):
        count = min(cparams.n_batch, n_prompt - start)
        chunk = (llama_cpp.llama_token * count).from_buffer(tokens, start * token_size)
        rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(chunk, count))
        if rc != 0:
            raise SystemExit(f"raw: llama_decode(prompt) returned {rc}")
    prompt_seconds = time.perf_counter() - t0

    piece_buf = ctypes.create_string_buffer(256)
    one = (llama_cpp.llama_token * 1)()
    pieces: list[bytes] = []
    first_at = last_at = 0.0
    for i in range(n_generate):
        token = llama_cpp.llama_sampler_sample(chain, ctx, -1)
        last_at = time.perf_counter()
        if i == 0:
            first_at = last_at
        n = llama_cpp.llama_token_to_piece(vocab, token, piece_buf, len(piece_buf), 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, token, big, len(big), 0, False)
            pieces.append(big.raw[:n])
        else:
            pieces.append(piece_buf.raw[:n])
        if i == n_generate - 1:
            break
        one[0] = token
        rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1))
        if rc != 0:
            raise SystemExit(f"raw: llama_decode returned {rc} at token {i}")
    seconds = last_at - first_at

    llama_cpp.llama_sampler_free(chain)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return {
        "prompt_tokens": n_prompt,
        "generated_tokens": n_generate,
        "decode_seconds": seconds,
        "tokens_per_second": (n_generate - 1) / seconds if n_generate > 1 and seconds > 0 else 0.0,
        "prompt_seconds": prompt_seconds,
        "text": b"".join(pieces).decode("utf-8", "replace"),
    }


def run_raw(
    model_path: str, prompt: str, threads: int, n_generate: int, flash_attn: str, shape: str | None
) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--raw-worker",
        "--model",
        model_path,
        "--prompt",
        prompt,
        "--threads",
        str(threads),
        "--max-tokens",
        str(n_generate),
        "--raw-flash-attn",
        flash_attn,
        *(["--shape", shape] if shape else []),
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"raw side failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- driver ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running both sides (default 3)")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens to generate (default 256)")
    parser.add_argument(
        "--threads", type=int, default=usable_cores(), help="threads for both sides (default: usable cores)"
    )
    parser.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help="the question (should make the model write a long answer)"
    )
    parser.add_argument(
        "--model", default=None, help="GGUF for the raw side (default: the demo model's file)"
    )
    parser.add_argument(
        "--raw-flash-attn",
        choices=sorted(FLASH_ATTN),
        default="auto",
        help="flash attention on the raw side: auto (llama.cpp's default), off (what llama_cpp.Llama uses), on",
    )
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    from shapes import add_shape_option, path_for

    add_shape_option(parser)
    args = parser.parse_args()

    if args.shape and not args.raw_worker:
        args.model = str(path_for(args.shape))
    cli_model = args.model if args.shape else "demo"
    if args.model is None:
        from starchat_cli.models.store import demo_model_path

        args.model = str(demo_model_path())

    if args.raw_worker:
        result = raw_worker(
            args.model, args.prompt, args.threads, args.max_tokens, args.raw_flash_attn, args.shape
        )
        print(json.dumps(result))
        return

    if args.rounds < 1 or args.max_tokens < 2:
        parser.error("--rounds must be >= 1 and --max-tokens >= 2")

    print(f"model: {args.model}")
    print(f"starchat: {' '.join(starchat_command())}")
    print(
        f"threads: {args.threads}  max tokens: {args.max_tokens}  rounds: {args.rounds}  "
        f"raw flash attention: {args.raw_flash_attn}"
    )
    print(f"prompt: {args.prompt!r}")

    warm = run_starchat(args.prompt, args.threads, args.max_tokens, cli_model)
    n_generate = warm["generated_tokens"]
    print(
        f"warm-up (not counted): starchat generated {n_generate} tokens "
        f"(stop: {warm['stop_reason']}), {warm['tokens_per_second']:.1f} tok/s"
    )
    if n_generate < 2:
        raise SystemExit("starchat generated fewer than 2 tokens: choose a prompt that makes a long answer")

    star_tps: list[float] = []
    raw_tps: list[float] = []
    pair_ratios: list[float] = []
    star_last: dict = warm
    raw_last: dict = {}
    noisy_runs = 0
    for r in range(1, args.rounds + 1):
        order = ("starchat", "raw") if r % 2 else ("raw", "starchat")
        pair: dict[str, float] = {}
        for side in order:
            if side == "starchat":
                meter = CpuMeter()
                res = run_starchat(args.prompt, args.threads, args.max_tokens, cli_model)
                noise, noisy = meter.stop()
                noisy_runs += noisy
                if res["generated_tokens"] != n_generate:
                    print(
                        f"  note: starchat generated {res['generated_tokens']} tokens this time, not {n_generate}"
                    )
                star_tps.append(res["tokens_per_second"])
                pair["starchat"] = res["tokens_per_second"]
                star_last = res
                print(
                    f"round {r} starchat: {res['tokens_per_second']:7.1f} tok/s  ({res['generated_tokens']} tokens, "
                    f"decode {res['decode_seconds']:.3f} s, ttft {res['ttft_seconds']:.3f} s, "
                    f"prompt {res['prompt_tokens']} tokens) {noise}"
                )
            else:
                meter = CpuMeter()
                res = run_raw(
                    args.model, args.prompt, args.threads, n_generate, args.raw_flash_attn, args.shape
                )
                noise, noisy = meter.stop()
                noisy_runs += noisy
                raw_tps.append(res["tokens_per_second"])
                pair["raw"] = res["tokens_per_second"]
                raw_last = res
                print(
                    f"round {r} raw:      {res['tokens_per_second']:7.1f} tok/s  ({res['generated_tokens']} tokens, "
                    f"decode {res['decode_seconds']:.3f} s, prompt eval {res['prompt_seconds']:.3f} s, "
                    f"prompt {res['prompt_tokens']} tokens) {noise}"
                )
        if pair["raw"] > 0:
            pair_ratios.append(pair["starchat"] / pair["raw"])

    print()
    same_prompt = star_last["prompt_tokens"] == raw_last["prompt_tokens"]
    print(
        f"prompt tokens: starchat {star_last['prompt_tokens']}, raw {raw_last['prompt_tokens']} "
        f"-> equal: {'yes' if same_prompt else 'no'}"
    )
    same_text = star_last["text"] == raw_last["text"]
    print(f"same generated text: {'yes' if same_text else 'no'}")
    if not same_text:
        a, b = star_last["text"], raw_last["text"]
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        print(f"  texts diverge at character {at}: starchat {a[at : at + 30]!r} vs raw {b[at : at + 30]!r}")

    star_med = statistics.median(star_tps)
    raw_med = statistics.median(raw_tps)
    ratio = star_med / raw_med if raw_med > 0 else float("nan")
    print(f"starchat tok/s: median {star_med:.1f}  (runs: {', '.join(f'{x:.1f}' for x in star_tps)})")
    print(f"raw tok/s:      median {raw_med:.1f}  (runs: {', '.join(f'{x:.1f}' for x in raw_tps)})")
    if noisy_runs:
        print(
            f"warning: {noisy_runs} of {2 * args.rounds} runs shared the CPU with other work; "
            "the medians may still be fine, but re-run on a quiet machine (or raise --rounds) to be sure"
        )
    print(f"RATIO starchat/raw = {ratio:.3f}  (ratio of medians; target >= 0.97)")
    if pair_ratios:
        print(
            f"per-round ratios: {', '.join(f'{x:.3f}' for x in pair_ratios)}  "
            f"-> median {statistics.median(pair_ratios):.3f}"
        )
    print(
        f"decode ratio starchat/raw = {ratio:.2f} (starchat {star_med:.1f} tok/s, raw {raw_med:.1f} tok/s, "
        f"{n_generate} tokens, {args.threads} threads)"
    )


if __name__ == "__main__":
    main()
