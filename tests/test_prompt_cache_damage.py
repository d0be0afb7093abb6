"""Prompt-cache side files damaged on disk: every field is checked, a bad entry is removed.

A side file (``ID.json``) can be JSON of another shape (``[]``, ``null``), hold absurd numbers
(a size of ``1e400``, ``NaN``, -1, a bool where an int belongs) or token ids that are not ids.
Such an entry is removed (state file and side file) with a note, and `starchat cache list`,
`cache list --json` and `cache clear` (real subprocesses) keep working and clean it up.
The same through `starchat ask` on the demo model is in test_prompt_cache.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from starchat_cli.engine.llamacpp.prompt_cache import CacheKey, PromptCache

from .helpers.cli import run_starchat

KEY = CacheKey("m", "fp", 4096, True, "f16", "0.3")
OTHER = CacheKey("healthy", "fp2", 4096, True, "f16", "0.3")


def writer(payload: bytes):
    def write(path: Path) -> bool:
        path.write_bytes(payload)
        return True

    return write


def field(name: str, raw: str):  # type: ignore[no-untyped-def]
    """The good side file with one field's JSON text replaced by ``raw`` (NaN, 1e400, ...)."""
    return lambda meta: json.dumps({**meta, name: "@@"}).replace('"@@"', raw)


def without(name: str):  # type: ignore[no-untyped-def]
    return lambda meta: json.dumps({k: v for k, v in meta.items() if k != name})


DAMAGES = {
    "a list": lambda meta: "[]",
    "null": lambda meta: "null",
    "a number": lambda meta: "42",
    "a string": lambda meta: '"entry"',
    "not UTF-8": lambda meta: json.dumps(meta).replace('"m"', '"\udcff"'),
    "nested too deep": lambda meta: "[" * 100_000,
    "size 1e400": field("size", "1e400"),
    "size -1": field("size", "-1"),
    "size a string": field("size", '"4096"'),
    "size true": field("size", "true"),
    "size NaN": field("size", "NaN"),
    "size a float": field("size", "4096.5"),
    "size huge": field("size", "1" + "0" * 30),
    "size 5000 digits": field("size", "1" * 5000),
    "crc32 negative": field("crc32", "-1"),
    "crc32 over 32 bits": field("crc32", str(2**32)),
    "crc32 null": field("crc32", "null"),
    "tokens a string": field("tokens", '"abc"'),
    "tokens an object": field("tokens", "{}"),
    "tokens empty": field("tokens", "[]"),
    "tokens with a string": field("tokens", '[1, "2", 3]'),
    "tokens with a bool": field("tokens", "[true, 2, 3]"),
    "tokens negative": field("tokens", "[-1, 2, 3]"),
    "tokens over 32 bits": field("tokens", f"[{2**40}, 2, 3]"),
    "tokens with 1e400": field("tokens", "[1e400, 2, 3]"),
    "created NaN": field("created", "NaN"),
    "created 1e400": field("created", "1e400"),
    "created a string": field("created", '"now"'),
    "created negative": field("created", "-5"),
    "exact negative": field("exact", "-1"),
    "exact past the tokens": field("exact", "100000"),
    "exact true": field("exact", "true"),
    "key a number": field("key", "5"),
    "key null": field("key", "null"),
    "model a list": field("model", "[]"),
    "format true": field("format", "true"),
    "format 2": field("format", "2"),
    "size missing": without("size"),
    "tokens missing": without("tokens"),
    "crc32 missing": without("crc32"),
    "key missing": without("key"),
}


def spoil(meta_path: Path, damage: str) -> None:
    meta = json.loads(meta_path.read_text())
    text = DAMAGES[damage](meta)
    meta_path.write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("damage", ["intact", *DAMAGES])
def test_a_side_file_with_a_bad_field_removes_its_entry(tmp_path, damage):
    cache = PromptCache(tmp_path, 10**9)
    healthy = cache.save(OTHER, list(range(500, 800)), writer(b"h" * 2000))
    entry = cache.save(KEY, list(range(300)), writer(b"s" * 4096))
    assert entry is not None and healthy is not None
    if damage == "intact":  # the side file as written reads back: only the damage removes it
        assert {e.id for e in cache.entries()} == {entry.id, healthy.id}
        return
    spoil(entry.meta_path, damage)
    assert cache.best(KEY.digest, list(range(300))) is None
    assert not entry.state_path.exists() and not entry.meta_path.exists()
    assert len(cache.notes) == 1 and entry.id in cache.notes[0] and "removed" in cache.notes[0]
    assert [e.id for e in cache.entries()] == [healthy.id]  # the healthy one is untouched
    cache.evict()
    assert cache.clear().count == 1 and list(tmp_path.iterdir()) == []


def test_a_side_file_that_is_a_folder_does_not_break_the_cache(tmp_path):
    cache = PromptCache(tmp_path, 10**9)
    (tmp_path / "odd.json").mkdir()
    entry = cache.save(KEY, list(range(300)), writer(b"s" * 4096))
    assert entry is not None and [e.id for e in cache.entries()] == [entry.id]
    assert cache.clear().count == 1


# -- `starchat cache` in real processes ------------------------------------------------------


def damaged_folder(home: Path) -> tuple[Path, PromptCache]:
    """One healthy entry and three damaged ones (``[]``, ``null``, a size of 1e400)."""
    folder = home / "cache" / "prompt-cache"
    cache = PromptCache(folder, 10**9)
    assert cache.save(OTHER, list(range(500, 800)), writer(b"h" * 2000)) is not None
    bad = []
    for n in range(3):
        key = CacheKey(f"bad{n}", f"fp-bad{n}", 4096, True, "f16", "0.3")
        bad.append(cache.save(key, list(range(n * 1000, n * 1000 + 300)), writer(b"d" * 1000)))
    for entry, damage in zip(bad, ["a list", "null", "size 1e400"]):
        assert entry is not None
        spoil(entry.meta_path, damage)
    assert len(list(folder.glob("*.state"))) == 4
    return folder, cache


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["clear"], ["clear", "healthy"]])
def test_cache_commands_remove_damaged_entries_and_keep_working(isolated_home, command):
    folder, _ = damaged_folder(isolated_home)
    res = run_starchat(["cache", *command])
    out, err = res.stdout.decode(), res.stderr.decode()
    assert res.returncode == 0, err
    assert "Traceback" not in err and "unexpected" not in err
    assert err.count("damaged prompt-cache entry") == 3  # said once each, then gone
    if command == ["list"]:
        assert "healthy" in out and "1 saved state(s)" in out
    elif command == ["list", "--json"]:
        rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))["entries"]
        assert [r["model"] for r in rows] == ["healthy"]
        assert all(math.isfinite(r["created"]) and r["size_bytes"] == 2000 for r in rows)
    else:
        assert "removed 1 saved prompt state(s)" in out
    left = sorted(p.suffix for p in folder.iterdir())
    assert left == ([] if command[0] == "clear" else [".json", ".state"])
    again = run_starchat(["cache", *command])
    assert again.returncode == 0 and "damaged" not in again.stderr.decode()
