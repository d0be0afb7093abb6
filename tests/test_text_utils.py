"""Stop sequences, fenced code blocks, block splitting, language guessing, binary input."""

from __future__ import annotations

import itertools

import pytest

from starchat_cli.chat.codeblocks import BlockSplitter, CodeStream, extract_code_blocks
from starchat_cli.chat.inputs import decode_text, guess_language
from starchat_cli.core.errors import InputError
from starchat_cli.engine.prompting.attachment import attach, fence_for
from starchat_cli.engine.prompting.stops import StopTextFilter


def run_filter(chunks, stops=("###",)):
    f = StopTextFilter(stops)
    out = "".join(f.feed(c) for c in chunks)
    return out + f.flush(), f


def all_splits(text, parts):
    for cuts in itertools.combinations(range(1, len(text)), parts - 1):
        bounds = (0, *cuts, len(text))
        yield [text[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_stop_text_removed_however_the_stream_is_split(parts):
    text = "def f():\n    return 1\n### Instruction\nmore"
    for chunks in all_splits(text, parts):
        out, f = run_filter(chunks)
        assert out == "def f():\n    return 1\n", chunks
        assert f.stopped and f.matched == "###"


def test_partial_stop_is_released_when_it_does_not_complete():
    out, f = run_filter(["# Title", "\n##", " sub", "#"])
    assert out == "# Title\n## sub#"
    assert not f.stopped


def test_held_back_text_is_not_shown_early():
    f = StopTextFilter(["###"])
    assert f.feed("abc ##") == "abc "
    assert f.feed("x") == "##x"


def test_earliest_of_several_stops_wins():
    out, f = run_filter(["hello <|end", "|> then ###"], stops=("###", "<|end|>"))
    assert out == "hello "
    assert f.matched == "<|end|>"


def test_no_stops_passes_everything():
    out, _ = run_filter(["a", "#", "##"], stops=())
    assert out == "a###"


REPLY = """Here you go:

```python
def rev(s):
    return s[::-1]
```

And a shell one:

~~~bash title=run.sh
echo hi
~~~

Inline `code` is not a block.
````md
```inner```
````
"""


def test_extract_code_blocks():
    blocks = extract_code_blocks(REPLY)
    assert [b.language for b in blocks] == ["python", "bash", "md"]
    assert blocks[0].code == "def rev(s):\n    return s[::-1]\n"
    assert blocks[1].info == "bash title=run.sh"
    assert blocks[1].code == "echo hi\n"
    assert blocks[2].code == "```inner```\n"
    assert all(b.closed for b in blocks)
    assert blocks[0].start_line == 2


def test_unclosed_block_runs_to_the_end():
    blocks = extract_code_blocks("text\n```py\nx = 1\ny = 2")
    assert len(blocks) == 1
    assert blocks[0].code == "x = 1\ny = 2\n"
    assert not blocks[0].closed


def test_indented_fence_strips_its_indent():
    blocks = extract_code_blocks("1. step\n   ```sh\n   ls -l\n   ```\n")
    assert blocks[0].code == "ls -l\n"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
def test_code_stream_matches_batch_extraction(size):
    stream = CodeStream()
    out = "".join(stream.feed(REPLY[i : i + size]) for i in range(0, len(REPLY), size)) + stream.flush()
    assert stream.found
    assert out == "\n".join(b.code for b in extract_code_blocks(REPLY))


def test_code_stream_without_code():
    stream = CodeStream()
    assert stream.feed("just prose\n") + stream.flush() == ""
    assert not stream.found


def test_code_stream_unclosed_block_gets_final_newline():
    stream = CodeStream()
    out = stream.feed("```py\nprint(1)") + stream.flush()
    assert out == "print(1)\n"


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_block_splitter_reassembles_the_reply(size):
    splitter = BlockSplitter()
    blocks = []
    for i in range(0, len(REPLY), size):
        blocks.extend(splitter.feed(REPLY[i : i + size]))
    rest = splitter.flush()
    joined = "".join(blocks) + rest
    # Nothing but separating blank lines is lost.
    assert [x for x in joined.splitlines() if x.strip()] == [x for x in REPLY.splitlines() if x.strip()]
    # A code fence is always one whole block, never split at its blank lines.
    fenced = [b for b in blocks if b.lstrip().startswith("```python")]
    assert fenced == ["```python\ndef rev(s):\n    return s[::-1]\n```\n"]


def test_block_splitter_keeps_blank_lines_inside_fences():
    splitter = BlockSplitter()
    done = splitter.feed("```py\na = 1\n\nb = 2\n")
    assert done == []
    assert splitter.pending == "```py\na = 1\n\nb = 2\n"
    assert splitter.feed("```\n") == ["```py\na = 1\n\nb = 2\n```\n"]


@pytest.mark.parametrize(
    "text, lang",
    [
        ("#!/usr/bin/env python3\nprint('x')\n", "python"),
        ("import os\n\ndef main():\n    pass\n", "python"),
        ("#!/bin/bash\nset -e\n", "bash"),
        ('{"a": [1, 2]}', "json"),
        ('fn main() {\n    println!("hi");\n}\n', "rust"),
        ('package main\n\nimport "fmt"\n\nfunc main() {}\n', "go"),
        ("#include <stdio.h>\nint main(void) { return 0; }\n", "c"),
        ("#include <vector>\nstd::vector<int> v;\n", "cpp"),
        ("const x = require('fs');\n", "javascript"),
        ("SELECT name FROM users WHERE id = 1;\n", "sql"),
        ("<!DOCTYPE html>\n<html></html>\n", "html"),
        ("diff --git a/x b/x\n--- a/x\n+++ b/x\n", "diff"),
        ("just some prose about a bug.\n", ""),
    ],
)
def test_guess_language(text, lang):
    assert guess_language(text) == lang


def test_guess_language_prefers_file_extension():
    assert guess_language("whatever", filename="x.rs") == "rust"


def test_binary_and_non_utf8_input_are_errors():
    with pytest.raises(InputError, match="binary"):
        decode_text(b"\x7fELF\x00\x00", "stdin")
    with pytest.raises(InputError, match="UTF-8"):
        decode_text(b"caf\xe9", "stdin")
    assert decode_text("café\r\nok".encode(), "stdin") == "café\nok"


def test_attach_uses_a_fence_longer_than_any_inside():
    text = "x\n```\ninner\n```\n"
    assert fence_for(text) == "````"
    msg = attach("explain", text, "markdown")
    assert msg == "````markdown\nx\n```\ninner\n```\n````\n\nexplain"
    assert extract_code_blocks(msg)[0].code == text


def test_an_attachment_rebuilds_its_turn_around_the_part_kept():
    from starchat_cli.engine.prompting.attachment import Attachment

    a = Attachment("a = 1\nb = 2\n", "explain", "python")
    assert a.turn(a.text) == attach("explain", a.text, "python")
    assert a.turn("b = 2\n") == "```python\nb = 2\n```\n\nexplain"
    assert Attachment("just this\n").turn("this\n") == "this\n"  # no question: the text is the turn
