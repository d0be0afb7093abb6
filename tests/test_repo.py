"""README, --help, CHANGELOG and .ci/run stay in step with each other."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from starchat_cli.cli.app import app

from .helpers.cli import REPO

README = (REPO / "README.md").read_text()


def setup_commands() -> list[str]:
    section = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [b.strip() for b in blocks]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one_verbatim():
    commands = setup_commands()
    # The GPU reinstall lines sit under their own sub-heading, after the two commands.
    install, tests = commands[0], commands[1]
    assert "'.[demo]'" in install and "starchat ask" in install
    assert "'.[test]'" in tests and "pytest" in tests
    assert "\n" not in install and "\n" not in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_every_ask_option_is_in_the_readme():
    help_text = CliRunner().invoke(app, ["ask", "--help"]).stdout
    options = set(re.findall(r"(--[a-z][a-z-]+)", help_text)) - {"--help"}
    assert len(options) >= 14
    missing = sorted(o for o in options if f"`{o}" not in README and f", {o}`" not in README)
    assert not missing, missing


def test_every_command_is_in_the_readme():
    help_text = CliRunner().invoke(app, ["--help"]).stdout
    commands = re.findall(r"^  (\w+)  ", help_text.split("Commands:", 1)[1], re.M)
    assert len(commands) >= 6
    for command in commands:
        assert f"starchat {command}" in README, command


def test_changelog_has_an_unreleased_section():
    assert "## Unreleased" in (REPO / "CHANGELOG.md").read_text()


def test_exit_codes_in_readme_match_the_code():
    from starchat_cli.core.errors import ExitCode

    for name, value in vars(ExitCode).items():
        if name.isupper():
            assert re.search(rf"^\| {value} \|", README, re.M), (name, value)


def test_benchmarks_import_nothing_from_tests():
    """Benchmarks run without the test suite: what they share with it lives in the packages
    (converters/synthetic.py writes the small random models)."""
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        assert not re.search(r"^\s*(from|import)\s+tests\b", script.read_text(), re.M), script.name


def test_shipped_code_reads_no_test_only_environment_variable():
    """Tests inject their hooks (a callback, a subprocess wrapper: tests/helpers/slow_convert.py)
    instead of switching production code with STARCHAT_TEST_* variables."""
    for package in ("starchat_cli", "converters"):
        for path in sorted((REPO / package).rglob("*.py")):
            assert "STARCHAT_TEST_" not in path.read_text(), path.relative_to(REPO)
