"""Streaming speed and responsiveness of ``starchat chat`` (the real Textual app, headless).

What it measures
----------------
1. Rendered tokens/s: a replay engine (``ReplayEngine`` below, one
   chunk per word, no delay) feeds a ``--tokens``-token reply (default 4,000: prose
   paragraphs and fenced code blocks) as fast as the app takes it into the app built by
   ``make_app`` and run with ``App.run_test`` (headless: the compositor still lays out
   and renders every frame). Timed from pressing Enter to the reply saved and the screen
   idle. Target: >= 2,000 tokens/s. The figure is bounded by Markdown layout, not by the
   engine: text that arrives while the UI is busy is coalesced into one append.
2. Keypress latency mid-stream: during another such reply, streamed at ``--pace``
   tokens/s (default 2,000, so that there is a stream to press keys into: unpaced, the replay
   outruns the UI and the whole reply lands in a couple of appends), ``--presses`` keys (default
   20) are pressed at evenly spaced points of the stream; each latency is from posting
   the key event to the app (as the terminal driver does) to the key handled by the
   input widget (the character inserted). Median and max are printed. Target: < 50 ms.
   The same run times every Markdown append (parsing the new tail, updating or mounting
   its blocks) and compares the cost per appended character in the first and the last
   quarter of the reply: about 1.0 means the cost per token does not grow with the
   length of the reply.
3. TTFT turn 10 / turn 2 on the demo model (SmolLM2-135M, real llama.cpp) with a
   ~200-token system prompt: ten turns through the same app (greedy, at most
   ``--reply-tokens`` tokens per reply), time to first token read from each saved
   reply's stats, half a second between turns (a user reads the reply, and the UI
   settles); also from pressing Enter to the reply's first text on screen, what the user
   waits for. ``--rounds`` conversations (default 3), the median per turn; the same
   conversations straight through the engine (no UI) are the reference. Turn 1 pays for
   the system prompt; later turns reuse llama.cpp's KV cache for the shared prefix (the
   tokens evaluated per turn are printed), so turn 10 should cost about what turn 2
   does. Target: <= 1.3.

Usage::

    python benchmarks/tui_stream.py                # all three
    python benchmarks/tui_stream.py --skip-model   # only the replay-engine figures

Shares the machine with whatever else runs: on 2 busy cores figures vary by tens of
percent between runs; the decode-bound part (3) most.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def split_chunks(text: str) -> list[str]:
    """One chunk per word (with its trailing spaces/newlines): roughly one per token."""
    return re.findall(r"\s*\S+\s*|\s+", text)


class ReplayEngine:
    """The Engine contract at its smallest: every reply is ``text``, one chunk per word, as fast as
    the app takes them or at most ``pace`` chunks per second. No model, so only the UI is timed."""

    def __init__(self, text: str, pace: float | None = None) -> None:
        from starchat_cli.engine.contract import EngineInfo

        self.chunks = split_chunks(text)
        self.pace = pace
        self.info = EngineInfo(name="replay", location="benchmark", loaded=True, n_ctx=1_000_000)

    def load(self):
        return self.info

    def persist(self) -> None:
        pass

    def count_tokens(self, messages) -> None:
        return None  # the app estimates, as for a remote server

    def generate(self, turns, params=None, **_):
        from starchat_cli.engine.contract import Generation, Stats

        stats = Stats(n_ctx=self.info.n_ctx)
        return Generation(self._replay(stats), stats)

    def complete(self, prompt, params=None, **_):
        raise NotImplementedError("the chat only calls generate")

    infill = complete

    def _replay(self, stats):
        from starchat_cli.engine.contract import StopReason

        start = time.perf_counter()
        for i, chunk in enumerate(self.chunks):
            wait = start + i / self.pace - time.perf_counter() if self.pace else 0
            if wait > 0:
                time.sleep(wait)
            stats.generated_tokens += 1
            stats.decode_seconds = time.perf_counter() - start
            yield chunk
        stats.stop_reason = StopReason.STOP


def long_reply(tokens: int) -> str:
    """About ``tokens`` words of Markdown: paragraphs with a fenced code block every few."""
    words: list[str] = []
    para = 0
    while len(words) < tokens:
        para += 1
        if para % 4 == 0:
            words += ["```python\n"]
            for i in range(8):
                words += [f"value_{i}", "=", f"compute({i},", f"{para})\n"]
            words += ["```\n\n"]
        else:
            words += [f"word{j}" for j in range(60)] + ["end.\n\n"]
    return " ".join(words[:tokens])


def make(engine, home: Path):
    from starchat_cli.chat.sessions import SessionStore
    from starchat_cli.tui.app import make_app

    return make_app(engine, model_name="bench", store=SessionStore(home / "sessions.sqlite3"), preload=False)


async def wait_done(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    while pilot.app.chat.generating:
        await asyncio.sleep(0.002)  # yield the CPU: no busy polling next to llama.cpp's threads
    await pilot.pause()


async def rendered_tokens_per_second(n_tokens: int, home: Path) -> tuple[float, int, float]:
    text = long_reply(n_tokens)
    engine = ReplayEngine(text)
    app = make(engine, home)
    async with app.run_test(size=(120, 40)) as pilot:
        app.chat.input.text = "go"
        started = time.perf_counter()
        await pilot.press("enter")
        await wait_done(pilot)
        elapsed = time.perf_counter() - started
        shown = app.query("AssistantMessage").last().text
        assert shown == text, "the reply on screen differs from the one streamed"
    chunks = len(split_chunks(text))
    return chunks / elapsed, chunks, elapsed


async def keypress_latency(
    n_tokens: int, presses: int, pace: float, home: Path
) -> tuple[list[float], list[float], int]:
    from textual import events
    from textual.widgets import Markdown

    from starchat_cli.tui.widgets import ChatInput

    text = long_reply(n_tokens)
    engine = ReplayEngine(text, pace=pace)
    app = make(engine, home)
    handled: dict[str, float] = {}
    original = ChatInput._on_key
    original_append = Markdown.append
    appends: list[tuple[int, int, float]] = []  # (document length before, chars added, seconds) per append

    async def timed_append(self, fragment):
        before = len(getattr(self.parent, "text", ""))  # position in the whole reply (segments included)
        t0 = time.perf_counter()
        await original_append(self, fragment)  # parse the new tail and update/mount its blocks
        if self.has_class("reply-body"):
            appends.append((before, len(fragment), time.perf_counter() - t0))

    Markdown.append = timed_append  # type: ignore[method-assign]

    async def timed(self, event):
        await original(self, event)
        if event.character and event.character.isalpha():
            handled.setdefault(event.character, time.perf_counter())

    ChatInput._on_key = timed  # type: ignore[method-assign]
    latencies: list[float] = []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            app.chat.input.text = "go"
            # Keys go in as the terminal driver sends them: posted to the app, not through
            # pilot.press (which waits for the app to be idle, i.e. for the stream to end).
            app.post_message(events.Key("enter", "\r"))
            while not app.chat.generating:
                await asyncio.sleep(0.0005)
            letters = "abcdefghijklmnopqrstuvwxyz"
            for i in range(presses):
                # Wait until the stream is i/presses of the way through, then press a key.
                target = int(len(text) * (i + 1) / (presses + 1))
                while app.chat.generating and len(app.query("AssistantMessage").last().text) < target:
                    await asyncio.sleep(0.0005)
                if not app.chat.generating:
                    break
                key = letters[i % 26]
                handled.pop(key, None)
                t0 = time.perf_counter()
                app.post_message(events.Key(key, key))
                while key not in handled and app.chat.generating:
                    await asyncio.sleep(0.0002)
                if key in handled:
                    latencies.append(handled[key] - t0)
            await wait_done(pilot)
    finally:
        ChatInput._on_key = original  # type: ignore[method-assign]
        Markdown.append = original_append  # type: ignore[method-assign]
    quarter = len(text) // 4
    first = [(n, sec) for at, n, sec in appends if at < quarter]
    last = [(n, sec) for at, n, sec in appends if at >= 3 * quarter]
    per_char = []
    if first and last:
        # Seconds per appended character over each quarter (appends carry varying amounts of text).
        per_char = [sum(sec for _, sec in part) / sum(n for n, _ in part) for part in (first, last)]
    return latencies, per_char, len(appends)


def system_prompt(backend, target: int = 200) -> str:
    sentence = (
        "You are a careful programming assistant. Answer with short, correct code and explain "
        "any assumption you make about the input, the edge cases and the complexity. "
    )
    text = sentence
    while len(backend.tokenize(text)) < target:
        text += sentence
    words = text.split()
    while len(backend.tokenize(" ".join(words))) > target:
        words.pop()
    return " ".join(words)


QUESTIONS = [
    "Write a Python function that reverses a string.",
    "Now make it handle None.",
    "Add a docstring.",
    "Write a test for it.",
    "How would you reverse words instead of characters?",
    "Write that function.",
    "What is its complexity?",
    "Rewrite it without split().",
    "Add type hints.",
    "Summarise what we wrote.",
]

Turn = tuple[float, int]  # (time to first token in seconds, prompt tokens evaluated)


async def app_conversation(engine, system: str, params, home: Path, name: str) -> list[Turn]:
    """The ten questions through the real app; TTFT from each saved reply's stats."""
    from starchat_cli.chat.sessions import SessionStore
    from starchat_cli.tui.app import make_app

    store = SessionStore(home / f"{name}.sqlite3")
    app = make_app(engine, model_name="demo", store=store, system=system, params=params, preload=False)
    async with app.run_test(size=(120, 40)) as pilot:
        for q in QUESTIONS:
            app.chat.input.text = q
            await pilot.press("enter")
            await wait_done(pilot)
            await asyncio.sleep(THINK_SECONDS)
        msgs = [m for m in store.messages(app.conversation.session.id) if m.role == "assistant"]
        shown = list(app.chat.replies.first_text_seconds)
    return [
        (float(m.stats["ttft_seconds"]), int(m.stats["prompt_tokens"]) - int(m.stats["cached_tokens"]))
        for m in msgs
    ], shown


def engine_conversation(engine, system: str, params) -> list[Turn]:
    """The same ten questions straight through the engine: the reference without a UI."""
    from starchat_cli.engine.prompting.formats import Message

    turns: list = []
    out: list[Turn] = []
    for q in QUESTIONS:
        turns.append(Message("user", q))
        gen = engine.generate(turns, params, system=system)
        text = "".join(gen)
        out.append((gen.stats.ttft_seconds, gen.stats.prompt_tokens - gen.stats.cached_tokens))
        turns.append(Message("assistant", text))
        time.sleep(THINK_SECONDS)
    return out


def ttft_rounds(reply_tokens: int, threads: int | None, rounds: int, home: Path):
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import get_format
    from starchat_cli.models.catalog import CATALOG
    from starchat_cli.models.store import demo_model_path

    path = demo_model_path()
    if path is None:
        raise SystemExit("the demo model is missing: pip install 'starchat[demo]'")
    backend = LlamaCppBackend(path, LoadOptions(n_ctx=4096, n_threads=threads))
    backend.load()
    engine = LocalEngine(backend, get_format("chatml"), CATALOG["demo"].default_system)
    system = system_prompt(backend)
    params = GenerationParams(max_tokens=reply_tokens, temperature=0)
    in_app: list[list[Turn]] = []
    on_screen: list[list[Turn]] = []
    direct: list[list[Turn]] = []
    for r in range(rounds):
        turns, shown = asyncio.run(app_conversation(engine, system, params, home, f"ttft{r}"))
        in_app.append(turns)
        on_screen.append([(t, n) for t, (_, n) in zip(shown, turns)])
        direct.append(engine_conversation(engine, system, params))
    return in_app, on_screen, direct, len(backend.tokenize(system))


def medians(runs: list[list[Turn]]) -> list[float]:
    return [statistics.median(run[i][0] for run in runs) for i in range(len(runs[0]))]


THINK_SECONDS = 0.5  # between turns, as a user reading the reply; the UI settles meanwhile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4000, help="reply length for parts 1 and 2")
    parser.add_argument("--presses", type=int, default=20, help="keys pressed during part 2")
    parser.add_argument("--pace", type=float, default=2000.0, help="tokens/s the replay streams at in part 2")
    parser.add_argument("--reply-tokens", type=int, default=48, help="max tokens per demo reply in part 3")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads for part 3")
    parser.add_argument("--rounds", type=int, default=3, help="ten-turn conversations per side in part 3")
    parser.add_argument("--skip-model", action="store_true", help="skip part 3 (the demo model)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["STARCHAT_HOME"] = str(home)
        tps, chunks, elapsed = asyncio.run(rendered_tokens_per_second(args.tokens, home))
        print(f"rendered: {chunks} tokens in {elapsed:.2f} s = {tps:,.0f} tokens/s (target >= 2,000)")
        lat, appends, n_appends = asyncio.run(keypress_latency(args.tokens, args.presses, args.pace, home))
        if appends:
            print(
                f"paced at {args.pace:,.0f} tokens/s: {n_appends} Markdown appends; append cost "
                f"{appends[0] * 1e6:.1f} us/char in the first quarter of the reply, {appends[1] * 1e6:.1f} us/char "
                f"in the last: ratio {appends[1] / appends[0]:.2f} (1.0 = independent of the reply's length)"
            )
        if lat:
            print(
                f"keypress latency mid-stream ({len(lat)} keys during a {args.tokens}-token reply): "
                f"median {statistics.median(lat) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms (target < 50 ms)"
            )
        else:
            print("keypress latency: the reply finished before any key was pressed (raise --tokens)")
        if not args.skip_model:
            in_app, on_screen, direct, n_sys = ttft_rounds(args.reply_tokens, args.threads, args.rounds, home)
            evaluated = ", ".join(str(n) for _, n in in_app[0])
            print(f"demo model, {n_sys}-token system prompt; prompt tokens evaluated per turn: {evaluated}")
            for label, runs in (
                ("in the app (engine stats)", in_app),
                ("in the app, Enter to first text on screen", on_screen),
                ("engine alone", direct),
            ):
                ttfts = medians(runs)
                shown = ", ".join(f"{t * 1000:.0f}" for t in ttfts)
                print(f"TTFT {label}, median of {len(runs)} per turn (ms): {shown}")
                print(
                    f"  turn 10 / turn 2 = {ttfts[9] * 1000:.0f} / {ttfts[1] * 1000:.0f} ms = "
                    f"{ttfts[9] / ttfts[1]:.2f} (target <= 1.3)"
                )


if __name__ == "__main__":
    main()
