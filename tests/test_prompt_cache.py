"""The persistent prompt cache: its files on their own, then through `starchat ask` and `serve`
on the real demo model in separate processes (the way a user runs them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starchat_cli.engine.llamacpp.prompt_cache import MIN_TOKENS, CacheKey, PromptCache, common_prefix

from .helpers.cli import REPO, run_starchat
from .helpers.servers import start_server, stop_server
from .helpers.tui import say

KEY = CacheKey("m", "fp", 4096, True, "f16", "0.3")
OTHER = CacheKey("m2", "fp2", 4096, True, "f16", "0.3")


def writer(payload: bytes):
    def write(path: Path) -> bool:
        path.write_bytes(payload)
        return True

    return write


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


# -- the files ----------------------------------------------------------------------------


def test_save_then_best_finds_the_longest_common_prefix(tmp_path):
    cache = PromptCache(tmp_path, 10**9)
    a = cache.save(KEY, tokens(300), writer(b"a" * 100))
    b = cache.save(KEY, tokens(200) + tokens(150, 5000), writer(b"b" * 100))
    assert a is not None and b is not None
    hit = cache.best(KEY.digest, tokens(280) + [9, 9])
    assert hit is not None and hit.entry.id == a.id and hit.prefix == 280
    hit = cache.best(KEY.digest, tokens(200) + tokens(10, 5000))
    assert hit is not None and hit.entry.id == b.id and hit.prefix == 210
    assert cache.best(OTHER.digest, tokens(300)) is None  # never offered to another key
    assert cache.best(KEY.digest, [7] + tokens(300)) is None  # no common first token


def test_short_sequences_are_not_saved_and_cap_zero_writes_nothing(tmp_path):
    assert PromptCache(tmp_path, 10**9).save(KEY, tokens(MIN_TOKENS - 1), writer(b"x")) is None
    off = PromptCache(tmp_path / "off", 0)
    assert not off.enabled and off.save(KEY, tokens(500), writer(b"x")) is None
    assert not (tmp_path / "off").exists()


def test_a_longer_sequence_supersedes_its_prefix(tmp_path):
    cache = PromptCache(tmp_path, 10**9)
    first = cache.save(KEY, tokens(300), writer(b"1" * 10))
    second = cache.save(KEY, tokens(400), writer(b"2" * 10))
    other = cache.save(OTHER, tokens(300), writer(b"3" * 10))
    assert first and second and other
    ids = {e.id for e in cache.entries()}
    assert ids == {second.id, other.id}  # turn N replaced turn N-1; the other key is untouched
    assert not first.state_path.exists() and not first.meta_path.exists()
    assert cache.save(KEY, tokens(400), writer(b"2" * 10)) is None  # already saved as it is


def test_the_cap_evicts_the_least_recently_used(tmp_path):
    cache = PromptCache(tmp_path, 2500)
    old = cache.save(KEY, tokens(200, 0), writer(b"o" * 1000))
    mid = cache.save(KEY, tokens(200, 1000), writer(b"m" * 1000))
    assert old and mid
    os.utime(old.meta_path, (time.time() - 100, time.time() - 100))
    os.utime(mid.meta_path, (time.time() - 200, time.time() - 200))
    cache.touch(old)  # used just now: the middle one is now the least recently used
    new = cache.save(KEY, tokens(200, 2000), writer(b"n" * 1000))
    assert new is not None
    assert {e.id for e in cache.entries()} == {old.id, new.id}
    assert sum(e.size for e in cache.entries()) <= 2500


def test_clear_frees_everything_or_one_model(tmp_path):
    cache = PromptCache(tmp_path, 10**9)
    cache.save(KEY, tokens(200), writer(b"a" * 1000))
    cache.save(OTHER, tokens(200), writer(b"b" * 3000))
    one = cache.clear("m2")
    assert (one.count, one.bytes) == (1, 3000) and [e.model for e in cache.entries()] == ["m"]
    (tmp_path / "tmp-123-x.state").write_bytes(b"z" * 10)  # a temp file of a killed run
    rest = cache.clear()
    assert rest.count == 1 and rest.bytes == 1010 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "zero-length", "random bytes", "bad side file"])
def test_a_damaged_entry_is_detected_and_removed(tmp_path, damage):
    cache = PromptCache(tmp_path, 10**9)
    entry = cache.save(KEY, tokens(300), writer(os.urandom(4096)))
    assert entry is not None and cache.verify(entry)
    if damage == "truncated":
        entry.state_path.write_bytes(entry.state_path.read_bytes()[:1000])
    elif damage == "zero-length":
        entry.state_path.write_bytes(b"")
    elif damage == "random bytes":  # same size, other content: only the checksum tells
        entry.state_path.write_bytes(os.urandom(4096))
    else:
        entry.meta_path.write_text('{"format": 1, "key": ')
    found = cache.entries(KEY.digest)
    if damage == "bad side file":
        assert found == [] and not entry.state_path.exists()
    else:
        assert [e.id for e in found] == [entry.id]
        assert not cache.verify(found[0])
        assert not entry.state_path.exists() and not entry.meta_path.exists()
    assert len(cache.notes) == 1 and entry.id in cache.notes[0]


def test_a_kill_during_the_save_leaves_nothing_that_is_loaded(tmp_path):
    """kill -9 while the state file is being written: the temp file is never an entry and is swept."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from starchat_cli.engine.llamacpp.prompt_cache import CacheKey, PromptCache\n"
        "def write(path):\n"
        "    with open(path, 'wb') as f:\n"
        "        f.write(b'half a state')\n"
        "        f.flush()\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "PromptCache(Path(sys.argv[1]), 10**9).save(CacheKey('m','fp',4096,True,'f16','0.3'), list(range(300)), write)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, timeout=60)
    assert res.returncode == -signal.SIGKILL
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith("tmp-") for p in leftovers)
    cache = PromptCache(tmp_path, 10**9)
    assert cache.entries() == [] and cache.best(KEY.digest, tokens(300)) is None
    old = time.time() - 3600
    for p in leftovers:
        os.utime(p, (old, old))
    assert cache.save(KEY, tokens(300), writer(b"ok")) is not None  # the next save sweeps them
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".state"]


def test_an_unwritable_cache_folder_is_a_note_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = PromptCache(blocker / "prompt-cache", 10**9)  # its parent is a regular file
    assert cache.save(KEY, tokens(300), writer(b"x")) is None
    assert len(cache.notes) == 1 and "cannot create" in cache.notes[0]
    assert cache.entries() == [] and cache.best(KEY.digest, tokens(300)) is None


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([1, 2], [1, 2]) == 2


# -- through the CLI, on the demo model ------------------------------------------------------

FILE = (REPO / "starchat_cli" / "engine" / "llamacpp" / "engine.py").read_text()[:5000]  # ~1,300 tokens


def ask_json(question: str, stdin: str, *args: str, env: dict[str, str] | None = None) -> dict:
    res = run_starchat(
        ["ask", "-m", "demo", "-t", "0", "-n", "24", "--json", *args, question],
        input=stdin.encode(),
        env=env,
    )
    assert res.returncode == 0, res.stderr.decode()
    return {**json.loads(res.stdout), "stderr": res.stderr.decode()}


@pytest.mark.e2e
def test_the_same_long_prompt_twice_comes_from_the_cache_with_the_same_answer(demo_gguf, isolated_home):
    first = ask_json("What does this code do?", FILE)
    second = ask_json("What does this code do?", FILE)
    p1, p2 = first["stats"], second["stats"]
    assert p1["cached_tokens"] == 0 and p1["prompt_tokens"] > 1000
    assert p2["cached_from"] == "disk" and p2["cached_tokens"] >= 0.9 * p2["prompt_tokens"]
    assert second["text"] == first["text"] and first["text"].strip()
    # A different question about the same piped file reuses the file part.
    third = ask_json("Which function is the longest?", FILE)
    assert third["stats"]["cached_from"] == "disk"
    assert third["stats"]["cached_tokens"] >= 0.9 * (p1["prompt_tokens"] - 20)
    # With the cache off nothing is reused, and the answer is still the same.
    off = ask_json("What does this code do?", FILE, env={"STARCHAT_PROMPT_CACHE": "off"})
    assert off["stats"]["cached_tokens"] == 0 and off["text"] == first["text"]
    listed = run_starchat(["cache", "list", "--json"])
    rows = json.loads(listed.stdout)["entries"]
    assert {r["model"] for r in rows} == {"demo"} and len(rows) == 2
    cleared = run_starchat(["cache", "clear"])
    assert cleared.returncode == 0 and "removed 2 saved prompt state(s)" in cleared.stdout.decode()
    assert json.loads(run_starchat(["cache", "list", "--json"]).stdout)["entries"] == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "zero-length",
        "random bytes",
        "foreign state",
        "side file []",
        "side file null",
        "side file size 1e400",
    ],
)
def test_a_bad_cache_file_gives_the_right_answer_and_is_removed(demo_gguf, isolated_home, damage):
    import zlib

    first = ask_json("What does this code do?", FILE)
    folder = isolated_home / "cache" / "prompt-cache"
    (state,) = folder.glob("*.state")
    (meta_path,) = folder.glob("*.json")
    good = state.read_bytes()

    def spoil() -> None:
        if damage == "truncated":
            state.write_bytes(good[: len(good) // 2])
        elif damage == "zero-length":
            state.write_bytes(b"")
        elif damage == "random bytes":
            state.write_bytes(os.urandom(len(good)))
        elif damage.startswith("side file"):  # JSON of the wrong shape, or an absurd number
            raw = damage.removeprefix("side file ")
            if raw.startswith("size"):
                raw = json.dumps({**json.loads(meta_path.read_text()), "size": "@@"}).replace('"@@"', "1e400")
            meta_path.write_text(raw)
        else:  # bytes llama.cpp does not accept, with a side file that vouches for them
            junk = os.urandom(4096)
            state.write_bytes(junk)
            meta = json.loads(meta_path.read_text())
            meta.update(size=len(junk), crc32=zlib.crc32(junk))
            meta_path.write_text(json.dumps(meta))

    def whole() -> bool:
        meta = json.loads(meta_path.read_text())
        data = state.read_bytes()
        return len(data) == meta["size"] and zlib.crc32(data) == meta["crc32"] and len(data) > 4096

    spoil()
    quiet = ask_json("What does this code do?", FILE, "--stats")
    assert quiet["text"] == first["text"] and quiet["stats"]["cached_tokens"] == 0
    assert quiet["stderr"].count("\n") == 1 and "prompt tokens" in quiet["stderr"]  # only --stats
    assert whole()  # the bad entry went; the run saved a good one in its place
    spoil()
    noted = ask_json("What does this code do?", FILE, "-v")
    assert noted["text"] == first["text"] and noted["stats"]["cached_tokens"] == 0
    assert "removed" in noted["stderr"] and "prompt-cache entry" in noted["stderr"]
    again = ask_json("What does this code do?", FILE)
    assert again["text"] == first["text"] and again["stats"]["cached_from"] == "disk"


@pytest.mark.e2e
def test_a_small_cap_keeps_only_the_newest_and_zero_writes_nothing(demo_gguf, isolated_home):
    folder = isolated_home / "cache" / "prompt-cache"
    env = {"STARCHAT_PROMPT_CACHE": "0.02"}  # 20 MB: room for one ~1,300-token demo state
    ask_json("What does this code do?", FILE[:2500], env=env)
    ask_json("What does this code do?", FILE[2500:], env=env)
    rows = json.loads(run_starchat(["cache", "list", "--json"], env=env).stdout)["entries"]
    assert len(rows) == 1 and sum(r["size_bytes"] for r in rows) <= 20_000_000
    run_starchat(["cache", "clear"])
    ask_json("What does this code do?", FILE, env={"STARCHAT_PROMPT_CACHE": "0"})
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.anyio
async def test_a_resumed_chat_reports_its_history_as_cached(demo_gguf, isolated_home):
    """`starchat chat -S ID` in a new process: the first reply finds the session's last state on disk."""
    from starchat_cli.chat.sessions import SessionStore
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.models.store import Store
    from starchat_cli.services.config import Settings
    from starchat_cli.services.runtime import engine_for
    from starchat_cli.tui.app import make_app
    from starchat_cli.tui.widgets import StatusBar

    settings = Settings(ctx=2048, threads=2)
    params = GenerationParams(max_tokens=120, temperature=0.0)
    model = Store().resolve("demo")
    app = make_app(engine_for(model, settings), model_name="demo", store=SessionStore(), params=params)
    async with app.run_test(size=(100, 32)) as pilot:
        for text in (
            "Write a Python function that reverses a list.",
            "Now make it work on strings too.",
            "Explain how slicing with a negative step works.",
        ):
            await say(pilot, text)
        session_id = app.conversation.session.id
    assert list((isolated_home / "cache" / "prompt-cache").glob("*.state"))

    fresh = engine_for(model, settings)  # a new llama.cpp context: nothing in memory
    app = make_app(fresh, model_name="demo", store=SessionStore(), session_id=session_id, params=params)
    async with app.run_test(size=(100, 32)) as pilot:
        await say(pilot, "Add a docstring.")
        last = app.conversation.store.messages(session_id)[-1]
        status = str(app.query_one(StatusBar).render())
    assert last.role == "assistant" and last.content.strip()
    st = last.stats
    assert st["cached_from"] == "disk", st
    # everything but the new message and the last 64 tokens (re-evaluated as one exact batch)
    assert st["cached_tokens"] >= 0.8 * st["prompt_tokens"] and st["prompt_tokens"] > 320
    assert f"{st['cached_tokens']:,} cached" in status


@pytest.mark.e2e
def test_a_restarted_server_answers_a_known_prefix_from_the_cache(demo_gguf, isolated_home):
    import httpx

    folder = isolated_home / "cache" / "prompt-cache"
    body = {
        "messages": [{"role": "user", "content": f"```python\n{FILE}\n```\nWhat does this code do?"}],
        "max_tokens": 16,
        "temperature": 0,
    }

    def one_server_run() -> dict:
        proc, base = start_server()
        try:
            res = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
            assert res.status_code == 200, res.text
            for _ in range(300):  # the state is written after the answer, off the request
                if list(folder.glob("*.json")):
                    break
                time.sleep(0.1)
            return res.json()
        finally:
            stop_server(proc)

    first = one_server_run()
    second = one_server_run()
    usage = second["usage"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 0.9 * usage["prompt_tokens"]
    assert second["choices"][0]["message"] == first["choices"][0]["message"]


def test_a_prefix_reused_in_memory_gives_the_uncached_reply(demo_gguf):
    """A prefix kept in memory from a long prompt (computed in >= 64-token batches) must not
    change a later reply: a short prompt after it, or a long one differing only in its last
    tokens, gives exactly what a fresh engine gives."""
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message, get_format
    from starchat_cli.models.catalog import CATALOG

    def fresh() -> LocalEngine:
        backend = LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=2048, n_threads=2))
        return LocalEngine(backend, get_format("chatml"), CATALOG["demo"].default_system)

    greedy = GenerationParams(max_tokens=24, temperature=0.0)
    long_text = "Explain what this code does:\n" + "\n".join(f"x{i} = {i} * {i}" for i in range(60))
    short = [Message("user", "Write a Python function that adds two numbers.")]
    variant = [Message("user", long_text + "\nAnd what is x7?")]
    expected = {id(m): "".join(fresh().generate(m, greedy)) for m in (short, variant)}

    for turns in (short, variant):
        warm = fresh()
        "".join(warm.generate([Message("user", long_text)], greedy))
        gen = warm.generate(turns, greedy)
        assert "".join(gen) == expected[id(turns)]
    assert gen.stats.cached_tokens > len(gen.fit.tokens) // 2  # the variant still reused its prefix


def test_the_same_prompt_again_evaluates_nothing_and_replies_the_same(demo_gguf):
    """The last prompt asked again (a repeated `ask` against a warm worker) is taken from the KV
    cache whole, its logits put back: not one token evaluated, the same reply, greedy or sampled
    with a seed, logprobs included; another prompt in between evaluates as before."""
    from starchat_cli.engine.llamacpp.backend import LlamaCppBackend, LoadOptions
    from starchat_cli.engine.llamacpp.engine import LocalEngine
    from starchat_cli.engine.params import GenerationParams
    from starchat_cli.engine.prompting.formats import Message, get_format

    engine = LocalEngine(
        LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=1024, n_threads=2)), get_format("chatml")
    )
    ask = [Message("user", "Write a Python function that adds two numbers.")]
    other = [Message("user", "Name three colours.")]
    for params in (
        GenerationParams(max_tokens=16, temperature=0.0, logprobs=2),
        GenerationParams(max_tokens=16, temperature=0.9, seed=7, draft="off"),
    ):
        first = engine.generate(ask, params)
        text = "".join(first)
        again = engine.generate(ask, params)
        assert "".join(again) == text and again.stats.generated_tokens == first.stats.generated_tokens
        assert again.stats.cached_tokens == again.stats.prompt_tokens == first.stats.prompt_tokens
        assert again.stats.cached_from == "memory" and again.logprobs == first.logprobs
        between = engine.generate(other, params)
        "".join(between)
        third = engine.generate(ask, params)
        assert third.stats.cached_tokens < third.stats.prompt_tokens  # evaluated as usual
        "".join(third)
    # a follow-up that extends the repeated prompt and its reply reads a consistent KV cache
    base = engine.generate(ask, GenerationParams(max_tokens=12, temperature=0.0))
    reply = "".join(base)
    repeat = engine.generate(ask, GenerationParams(max_tokens=12, temperature=0.0))
    assert "".join(repeat) == reply and repeat.stats.cached_tokens == repeat.stats.prompt_tokens
    follow = [*ask, Message("assistant", reply), Message("user", "Now subtract.")]
    cold = LocalEngine(LlamaCppBackend(demo_gguf, LoadOptions(n_ctx=1024, n_threads=2)), get_format("chatml"))
    greedy = GenerationParams(max_tokens=12, temperature=0.0)
    warm_follow = engine.generate(follow, greedy)
    assert "".join(warm_follow) == "".join(cold.generate(follow, greedy))
    assert warm_follow.stats.cached_tokens > repeat.stats.prompt_tokens  # the prompt and reply reused
