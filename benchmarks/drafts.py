"""Drafted (prompt-lookup) decoding: how well the drafts copy, and whether it pays here.

Two tasks on the demo model (greedy, 2 threads by default), in one process with one engine:

1. edit: a ~70-line Python file and "rename py_make_scanner to make_python_scanner everywhere,
   reply with the whole file in a code block" (most of the reply is a copy of the prompt);
2. fresh: a task that copies nothing (a short story).

For each task, paired rounds run ``--draft off``, ``on`` and ``auto`` in alternating order;
reported are the medians of decode tokens/s (first generated token to the last) and the ratios
``auto/off`` (target >= 0.95 on both tasks: auto must never hurt) and ``on/off``; generated
tokens per decode step with ``on`` ((generated - 1) / forward passes; target >= 2 on the edit:
the drafts' quality, independent of the hardware); whether drafted text equals plain text.

Then the batch-cost curve (time of a batch of 1, 2, 4, 8, 16 tokens / one token, as ``auto``
measures it, and how long the measurement took), llama-cpp-python's own
``LlamaPromptLookupDecoding`` on the same prompts (its speed relative to the same ``Llama``
without it, and whether its greedy text equals starchat's plain text), and the expected
speedup from tokens per step and the curve:

    speedup = (tokens per step) / cost(mean batch size)

evaluated with this machine's curve. On a CUDA or Metal machine run the same script with
``--gpu auto --model PATH.gguf`` (e.g. StarChat2-15B Q4_K_M) to measure the curve there.
``--shape starcoder2-15b`` (``benchmarks/shapes.py --list``) runs on a real-scale file (the
model's shapes, random weights): its batch-cost curve is the real model's, but its text is
noise, so the drafts' acceptance (tokens per step) says nothing there.
Timing figures are printed, never asserted on.

    python benchmarks/drafts.py [--rounds 3] [--max-tokens 400] [--threads 2] [--gpu off|auto|N]
                                [--model PATH | --shape NAME] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def python_file(lines: int = 70) -> str:
    """A plausible ~70-line module that uses ``py_make_scanner`` throughout."""
    out = ['"""A tiny JSON-ish scanner."""', "", "import re", "", "NUMBER = re.compile(r'-?\\d+')", ""]
    i = 0
    while len(out) < lines - 4:
        out += [
            f"def scan_part_{i}(text, index):",
            f"    scanner = py_make_scanner(text, strict={i % 2 == 0})",
            "    match = NUMBER.match(text, index)",
            "    if match is None:",
            "        return scanner(text, index)",
            f"    return int(match.group()) + {i}, match.end()",
            "",
        ]
        i += 1
    out += ["", "def main(text):", "    return py_make_scanner(text)(text, 0)", ""]
    return "\n".join(out)


def tasks(quick: bool) -> dict[str, str]:
    code = python_file(20 if quick else 70)
    return {
        "edit": "Rename py_make_scanner to make_python_scanner everywhere in this file. "
        f"Reply with the whole new file in one code block.\n\n```python\n{code}\n```",
        "fresh": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    }


def open_engine(model: str | None, threads: int, gpu: str, ctx: int):
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.prompting.formats import get_format
    from starchat_cli.engine.speculative.calibrate import CurveCache
    from starchat_cli.models.catalog import CATALOG
    from starchat_cli.models.store import demo_model_path

    path = Path(model) if model else demo_model_path()
    if path is None:
        sys.exit("the demo model is missing: pip install 'starchat[demo]'")
    gpu_opt: str | int = gpu if gpu in ("auto", "off") else int(gpu)
    backend = LlamaCppBackend(path, LoadOptions(n_ctx=ctx, n_threads=threads, gpu=gpu_opt))
    cache = CurveCache(Path(tempfile.mkdtemp()) / "cost.json")  # measure afresh
    if model:
        from starchat_cli.engine.llamacpp.file_format import format_for_backend

        engine = LocalEngine(backend, format_for_backend(backend), curve_cache=cache)
    else:
        engine = LocalEngine(backend, get_format("chatml"), CATALOG["demo"].default_system, curve_cache=cache)
    engine.load()
    return engine


def run(engine, prompt: str, mode: str, max_tokens: int) -> dict:
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message

    engine.backend.truncate(0)  # no prefix from the previous run: every run evaluates its prompt
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens, draft=mode)
    gen = engine.generate([Message("user", prompt)], params)
    text = "".join(gen)
    s = gen.stats
    return {"text": text, "tps": s.tokens_per_second, "stats": s}


def lookup_baseline(engine, prompt: str, max_tokens: int, threads: int, gpu_layers: int) -> dict:
    """llama-cpp-python's LlamaPromptLookupDecoding vs the same Llama class without it."""
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    from starchat_cli.engine.llamacpp.amx import safe_loading
    from starchat_cli.engine.prompting.formats import Message

    text = engine.prompt_format.render(engine.build_messages([Message("user", prompt)], None))
    out = {}
    for name, draft in (("plain", None), ("lookup", LlamaPromptLookupDecoding(num_pred_tokens=10))):
        with safe_loading():  # the weight buffers starchat uses here (no AMX where it crashes)
            llm = llama_cpp.Llama(
                str(engine.backend.path),
                n_ctx=engine.backend.n_ctx,
                n_threads=threads,
                n_gpu_layers=gpu_layers,
                flash_attn=True,
                draft_model=draft,
                logits_all=draft is not None,  # its drafting needs every position's logits kept
                verbose=False,
            )
        stamps, pieces = [], []
        for chunk in llm.create_completion(
            text, max_tokens=max_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, stream=True
        ):
            stamps.append(time.perf_counter())
            pieces.append(chunk["choices"][0]["text"])
        tps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        out[name] = {"tps": tps, "text": "".join(pieces)}
        del llm
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu", default="off", help="GPU layers: off, auto or a number (as starchat --gpu)")
    ap.add_argument("--model", help="a GGUF file instead of the demo model")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--quick", action="store_true", help="a short smoke run: 1 round, few tokens")
    from shapes import add_shape_option, path_for

    add_shape_option(ap)
    args = ap.parse_args()
    if args.shape:
        args.model = str(path_for(args.shape))
    if args.quick:
        args.rounds, args.max_tokens = 1, 24

    from starchat_cli.engine.speculative.policy import relative_cost

    engine = open_engine(args.model, args.threads, args.gpu, args.ctx)
    print(f"model {engine.backend.path.name}, threads {args.threads}, gpu {engine.backend.gpu.n_gpu_layers}")
    summary = {}
    for task, prompt in tasks(args.quick).items():
        runs: dict[str, list[dict]] = {"off": [], "on": [], "auto": []}
        orders = [("off", "on", "auto"), ("auto", "on", "off"), ("on", "off", "auto")]
        for r in range(args.rounds):
            for mode in orders[r % len(orders)]:
                res = run(engine, prompt, mode, args.max_tokens)
                runs[mode].append(res)
                s = res["stats"]
                print(
                    f"  {task:5} {mode:4} {res['tps']:7.1f} tok/s  {s.generated_tokens} tokens, "
                    f"{s.decode_steps} steps, drafted {s.drafted_tokens}, accepted {s.accepted_tokens}"
                )
        med = {m: statistics.median(x["tps"] for x in v) for m, v in runs.items()}
        on = runs["on"][0]["stats"]
        per_step = (on.generated_tokens - 1) / on.decode_steps if on.decode_steps else 0.0
        batch = (on.decode_steps + on.drafted_tokens) / on.decode_steps if on.decode_steps else 1.0
        same = all(x["text"] == runs["off"][0]["text"] for v in runs.values() for x in v)
        summary[task] = (per_step, batch)
        print(
            f"{task}: tokens/step with on {per_step:.2f} (mean batch {batch:.1f}); "
            f"auto/off {med['auto'] / med['off']:.2f}, on/off {med['on'] / med['off']:.2f} "
            f"(medians {med['off']:.1f} / {med['on']:.1f} / {med['auto']:.1f} tok/s off/on/auto); "
            f"drafted text == plain: {same}"
        )
        if not args.quick:
            try:
                base = lookup_baseline(
                    engine, prompt, args.max_tokens, args.threads, engine.backend.gpu.n_gpu_layers
                )
            except Exception as exc:  # another llama-cpp-python version: say so, keep the rest
                print(f"  llama-cpp-python LlamaPromptLookupDecoding failed: {type(exc).__name__}: {exc}")
                continue
            ratio = base["lookup"]["tps"] / base["plain"]["tps"] if base["plain"]["tps"] else 0.0
            equal = base["lookup"]["text"] == runs["off"][0]["text"]
            print(
                f"  llama-cpp-python LlamaPromptLookupDecoding: {ratio:.2f}x its plain speed; greedy text == plain: {equal}"
            )
    curve = engine.auto_curve.wait(timeout=120) or {}  # measured in the background after auto's first reply
    print(
        f"batch-cost curve (measured by auto in {engine.auto_curve.seconds:.2f} s): "
        + ", ".join(f"{s}: {c:.2f}x" for s, c in sorted(curve.items()))
    )
    for task, (per_step, batch) in summary.items():
        if curve:
            cost = relative_cost(curve, max(1, round(batch)))
            print(
                f"expected speedup of on, {task}: {per_step:.2f} tokens/step / cost({batch:.1f}) {cost:.2f} = "
                f"{per_step / cost:.2f}x on this machine"
            )


if __name__ == "__main__":
    main()
