"""The README's exit-code table and core.errors.ExitCode stay in step."""

from __future__ import annotations

import re

from starchat_cli.cli.app import EXIT_READER_GONE
from starchat_cli.core.errors import ExitCode

from .helpers.cli import REPO


def readme_table() -> dict[int, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, flags=re.MULTILINE)
    assert rows, "no table under ## Exit codes"
    table: dict[int, str] = {}
    for number, meaning in rows:
        assert int(number) not in table, f"exit code {number} has two rows"
        table[int(number)] = meaning
    return table


def members() -> dict[str, int]:
    return {k: v for k, v in vars(ExitCode).items() if k.isupper() and isinstance(v, int)}


def test_every_member_has_a_row_and_every_row_a_member():
    table = readme_table()
    codes = set(members().values())
    assert len(codes) == len(members()), "two ExitCode members share a number"
    assert codes - set(table) == set(), f"ExitCode members missing from the README: {codes - set(table)}"
    extra = set(table) - codes - {EXIT_READER_GONE}
    assert extra == set(), f"README rows without an ExitCode member: {extra}"
    assert EXIT_READER_GONE == 141 and 141 in table and "head" in table[141]


def test_new_error_paths_are_worded_in_the_table():
    table = readme_table()
    assert "read-only" in table[ExitCode.OUTPUT] and "under a regular file" in table[ExitCode.OUTPUT]
    assert "garbage" in table[ExitCode.REMOTE] or "not an OpenAI answer" in table[ExitCode.REMOTE]
    assert "out of range" in table[ExitCode.CONFIG]
    assert "SIGTERM" in table[ExitCode.TERMINATED]
    assert "disk full" in table[ExitCode.ERROR]
