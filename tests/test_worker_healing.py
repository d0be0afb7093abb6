"""Self-healing workers (engine/worker/healing.py): a native crash while loading, reading the prompt
or decoding is retried once with the next safer settings, the reply is the one an uncrashed run
gives, and what worked is remembered; a retry that dies too is one line and exit 13.

The crashes are real: the worker process dies by SIGSEGV or SIGABRT inside the llama.cpp backend,
injected by tests/helpers/faults (a sitecustomize the worker imports), never by starchat's code.
"""

from __future__ import annotations

import json
import signal

import pytest

from starchat_cli.engine.worker.healing import (
    Crash,
    Fallbacks,
    apply_steps,
    cpu_has_amx_tiles,
    next_step,
    read_crash,
)
from starchat_cli.engine.worker.spec import EngineSpec
from tests.helpers import faults
from tests.helpers.cli import run_starchat

ASK = ["ask", "-m", "demo", "-t", "0", "--ctx", "1024", "-n", "12"]
QUESTION = "say hi"
# AMX off whatever the machine (tests elsewhere get this machine's verdict), so the first step of the
# ladder is the same everywhere: flash attention off
PLAIN = {"STARCHAT_AMX": "off"}


def ask(env: dict[str, str] | None = None, *args: str):
    return run_starchat([*ASK, *args, QUESTION], env={**PLAIN, **(env or {})})


def remembered() -> list[dict]:
    res = run_starchat(["doctor", "--json"])
    return json.loads(res.stdout)["fallbacks"]


def uncrashed(demo_gguf, *steps: str, env: dict[str, str] | None = None) -> bytes:
    """The answer of a run that does not crash, with the settings a retry takes (remembered)."""
    memory = Fallbacks.default()
    memory.remember(EngineSpec(path=str(demo_gguf), name="demo"), steps, "set by the test")
    res = ask(env)
    memory.forget()
    assert res.returncode == 0 and "crashed" not in res.stderr.decode(), res.stderr
    return res.stdout


def worker_lines(res) -> list[str]:
    return [ln for ln in res.stderr.decode().splitlines() if "worker" in ln]


@pytest.mark.parametrize("at", ["load", "prompt"])
def test_a_segfault_is_retried_and_the_answer_is_the_uncrashed_one(demo_gguf, at):
    baseline = uncrashed(demo_gguf, "no-flash-attn")
    res = ask(faults.env(at=at, unless={"flash_attn": "False"}, after=4))
    assert res.returncode == 0, res.stderr
    assert res.stdout == baseline  # nothing shown twice, nothing lost
    doing = {"load": "loading", "prompt": "reading the prompt"}[at]
    assert worker_lines(res) == [
        f"starchat: the model worker crashed (SIGSEGV while {doing}): retrying without flash attention"
    ]
    [entry] = remembered()
    assert entry["steps"] == ["no-flash-attn"] and entry["why"] == f"SIGSEGV while {doing}"
    assert entry["model"] == "demo"

    again = ask(faults.env(at=at, unless={"flash_attn": "False"}), "-v")  # starts with what worked
    assert again.returncode == 0 and again.stdout == baseline
    err = again.stderr.decode()
    assert (
        "crashed" not in err and "started without flash attention: remembered after an earlier crash" in err
    )
    assert "flash attention off" in err


def test_a_crash_mid_reply_is_retried_and_the_text_already_shown_is_not_repeated(demo_gguf):
    # flash attention already off (remembered), so the next step is "no GPU layers", which changes
    # no number on a CPU-only build: the retried reply is the uncrashed one token for token
    Fallbacks.default().remember(EngineSpec(path=str(demo_gguf), name="demo"), ("no-flash-attn",), "earlier")
    baseline = ask()
    assert baseline.returncode == 0, baseline.stderr
    res = ask(faults.env(at="decode", unless={"gpu": "off"}, after=5))
    assert res.returncode == 0, res.stderr
    assert worker_lines(res) == [
        "starchat: the model worker crashed (SIGSEGV while replying): retrying without GPU layers"
    ]
    assert res.stdout == baseline.stdout
    assert [e["steps"] for e in remembered()] == [["no-flash-attn", "no-gpu"]]


@pytest.mark.skipif(not cpu_has_amx_tiles(), reason="the AMX step applies only on a CPU with AMX tiles")
def test_on_a_cpu_with_amx_an_abort_is_retried_without_amx_first(demo_gguf):
    amx_on = {"STARCHAT_AMX": "on"}  # on this kind of host llama.cpp's own AMX matmul may crash too
    res = ask({**amx_on, **faults.env(at="prompt", how="abort", unless={"amx": "off"})})
    assert res.returncode == 0, res.stderr
    assert res.stdout == ask().stdout  # the same as with amx = off from the start
    [line] = worker_lines(res)
    assert line.endswith("while reading the prompt): retrying without Intel AMX")
    assert [e["steps"] for e in remembered()] == [["amx-off"]]


def test_out_of_memory_is_retried_without_gpu_layers(demo_gguf):
    res = ask(faults.env(at="load", how="oom", unless={"gpu": "off"}))
    assert res.returncode == 0, res.stderr
    assert res.stdout == ask({"STARCHAT_GPU": "off"}).stdout
    assert worker_lines(res) == [
        "starchat: the model worker crashed (SIGABRT, out of memory while loading): retrying without GPU layers"
    ]


def test_a_retry_that_dies_too_is_one_line_and_exit_13_and_the_next_call_goes_one_step_further(demo_gguf):
    crashing = faults.env(at="prompt")  # whatever the settings
    res = ask(crashing)
    assert res.returncode == 13
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("retrying without flash attention"), lines
    assert (
        "crashed again (SIGSEGV while reading the prompt) after retrying without flash attention" in lines[1]
    )
    assert "Traceback" not in res.stderr.decode() and not res.stdout
    assert [e["steps"] for e in remembered()] == [["no-flash-attn"]]

    res = ask(crashing)
    assert res.returncode == 13 and "retrying without GPU layers" in res.stderr.decode()
    assert [e["steps"] for e in remembered()] == [["no-flash-attn", "no-gpu"]]

    res = ask(crashing)  # nothing safer is left: no retry at all
    assert res.returncode == 13
    [line] = res.stderr.decode().strip().splitlines()
    assert "was killed by SIGSEGV while reading the prompt" in line

    forgot = run_starchat(["doctor", "--forget-fallbacks"])
    assert forgot.stdout.decode().strip() == "forgot 1 remembered fallback"
    assert remembered() == []
    assert ask().returncode == 0  # no fault, usual settings


def test_a_kill_from_outside_is_not_retried(demo_gguf):
    res = ask(faults.env(at="prompt", how="kill"))
    assert res.returncode == 13
    [line] = res.stderr.decode().strip().splitlines()
    assert "was killed by SIGKILL while reading the prompt" in line and remembered() == []


def test_doctor_names_a_remembered_fallback_and_how_to_clear_it(demo_gguf):
    assert ask(faults.env(at="load", unless={"flash_attn": "False"})).returncode == 0
    report = run_starchat(["doctor"]).stdout.decode()
    assert (
        "demo starts without flash attention: it crashed with the usual settings (SIGSEGV while loading"
        in report
    )
    assert "starchat doctor --forget-fallbacks" in report


# -- the rules, without processes --------------------------------------------------------------

SPEC = EngineSpec(path="/m.gguf", name="m", gpu="auto", amx="auto")


def test_which_deaths_are_faults():
    segv = read_crash(-signal.SIGSEGV, "", "replying")
    assert segv.fault and segv.describe() == "SIGSEGV while replying"
    assert not read_crash(-signal.SIGKILL, "", "replying").fault  # a kill from outside
    assert not read_crash(-signal.SIGTERM, "", "loading").fault
    logged = read_crash(None, "blah\nFatal Python error: Aborted\n", "loading")  # not our child: its log
    assert logged.signal == "SIGABRT" and logged.fault
    asserted = read_crash(None, "ggml.c:12: GGML_ASSERT(x) failed\n", "loading")
    assert asserted.fault and asserted.describe() == "an abort while loading"
    assert read_crash(None, "", "loading") == Crash("loading")
    assert not Crash("loading").fault  # nothing known: no retry


def test_the_ladder(monkeypatch):
    from starchat_cli.engine.worker import healing

    monkeypatch.setattr(healing, "cpu_has_amx_tiles", lambda: True)
    segv = Crash("replying", "SIGSEGV")
    names, spec, applied = [], SPEC, ()
    while (step := next_step(spec, segv, applied)) is not None:
        names.append(step.name)
        spec, applied = step.spec, (*applied, step.name)
    assert names == ["amx-off", "no-flash-attn", "no-gpu"]
    assert (spec.amx, spec.flash_attn, spec.gpu) == ("off", False, "off")
    assert apply_steps(SPEC, tuple(names)) == spec

    oom = Crash("loading", "SIGABRT", oom=True)
    step = next_step(EngineSpec(path="/m", gpu=20), oom)
    assert step is not None and step.name == "fewer-gpu-layers" and step.spec.gpu == 10
    step = next_step(step.spec, oom, ("fewer-gpu-layers",))
    assert step is not None and step.name == "no-gpu" and step.spec.gpu == "off"
    assert next_step(EngineSpec(path="/m", gpu="off"), oom) is None  # out of memory on the CPU

    monkeypatch.setattr(healing, "cpu_has_amx_tiles", lambda: False)
    step = next_step(SPEC, segv)
    assert step is not None and step.name == "no-flash-attn"  # no AMX here: nothing to turn off
