"""Intel AMX: the decision (CPU, build, setting, probe verdicts, the remembered verdict), the probe
child with real processes (one killed by SIGSEGV through the command seam), the CPU buffer-type
adapter, and README command 1 end to end on a machine whose CPU has AMX."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from starchat_cli.engine.llamacpp import amx
from starchat_cli.engine.llamacpp.amx import AmxStatus, ProbeCache, ProbeRun, decide, run_child

from .helpers.cli import REPO, run_starchat

AMX_CPU = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\ncpu family\t: 6\nmodel\t: 143\nstepping\t: 8\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n\n"
PLAIN_CPU = AMX_CPU.replace(" amx_bf16 amx_tile amx_int8", "").replace("8488C", "8375C")
AMX_BUILD = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 | "
PLAIN_BUILD = AMX_BUILD.replace("AMX_INT8 = 1 | ", "")
SEGV = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]


def real_cpu_has_amx() -> bool:
    return amx.cpu_has_amx(amx.cpu_info_text())


def real_build_has_amx() -> bool:
    import llama_cpp

    return amx.build_has_amx(llama_cpp.llama_print_system_info().decode("utf-8", "replace"))


class Script:
    """A probe runner that answers from a table and records which modes were asked."""

    def __init__(self, **outcomes: str) -> None:
        self.outcomes = {k.replace("_", "-"): v for k, v in outcomes.items()}
        self.asked: list[str] = []

    def __call__(self, mode: str) -> ProbeRun:
        self.asked.append(mode)
        detail = self.outcomes[mode]
        return ProbeRun(mode, detail == "ok", detail, 0.25, amx_buffer=mode == "default")


def never(mode: str) -> ProbeRun:
    raise AssertionError(f"no probe may run here (asked for {mode})")


@pytest.fixture
def cache(tmp_path: Path) -> ProbeCache:
    return ProbeCache(tmp_path / "amx-probe.json")


def test_a_probe_that_cannot_run_at_all_is_not_remembered(cache):
    broken = "exit 1: /usr/bin/python: No module named starchat_cli.engine.amx_probe"
    script = Script(default=broken, drop_amx=broken, no_extra=broken)
    status = decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=script)
    assert (status.state, status.load_mode) == ("avoided", "no-extra")  # the safest mode, for this run
    assert script.asked == ["default", "drop-amx", "no-extra"]
    assert cache.get(amx.probe_key(AMX_CPU)) is None  # nothing learnt about the machine: probe next time
    again = Script(default="SIGSEGV", drop_amx="ok")
    status = decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=again)
    assert (status.state, status.load_mode) == ("avoided", "drop-amx") and again.asked == [
        "default",
        "drop-amx",
    ]


def test_cpu_and_build_flags_are_read():
    assert amx.cpu_has_amx(AMX_CPU) and not amx.cpu_has_amx(PLAIN_CPU)
    assert not amx.cpu_has_amx("flags : amx_tile avx2\n")  # tiles without int8: llama.cpp cannot use it
    assert not amx.cpu_has_amx("")
    assert amx.build_has_amx(AMX_BUILD) and not amx.build_has_amx(PLAIN_BUILD)
    assert amx.cpu_name(AMX_CPU) == "Intel(R) Xeon(R) Platinum 8488C (6/143/8)"


@pytest.mark.parametrize(
    ("cpu", "build", "why"),
    [
        (PLAIN_CPU, AMX_BUILD, "no AMX in this CPU"),
        (AMX_CPU, PLAIN_BUILD, "this llama.cpp build has no AMX kernels"),
        (PLAIN_CPU, PLAIN_BUILD, "no AMX in this CPU"),
    ],
)
def test_nothing_is_probed_where_the_cpu_or_build_lacks_amx(cpu, build, why, cache):
    status = decide("auto", cpuinfo=cpu, system_info=build, cache=cache, runner=never)
    assert (status.state, status.load_mode, status.detail) == ("absent", "default", why)
    assert not cache.path.exists()


def test_setting_on_and_off_skip_the_probe(cache):
    on = decide("on", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=never)
    off = decide("off", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=never)
    assert (on.state, on.load_mode) == ("used", "default")
    assert (off.state, off.load_mode) == ("off", "drop-amx")
    assert "AMX: off" in off.describe() and "repack kept" in off.describe()
    with pytest.raises(ValueError):
        decide("maybe", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=never)


def test_a_working_amx_path_is_used_and_remembered(cache):
    script = Script(default="ok")
    first = decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=script)
    assert (first.state, first.load_mode, first.probe_seconds) == ("used", "default", 0.25)
    assert first.describe() == "AMX: used (AMX kernels ran)"
    again = decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=never)
    assert (again.state, again.probe_seconds) == ("used", 0.0)  # from the file: no second probe
    assert again.probed_at == first.probed_at != ""
    assert script.asked == ["default"]


@pytest.mark.parametrize(
    ("outcomes", "mode", "detail", "asked"),
    [
        ({"default": "SIGSEGV", "drop_amx": "ok"}, "drop-amx", "SIGSEGV", ["default", "drop-amx"]),
        (
            {"default": "SIGSEGV", "drop_amx": "SIGILL", "no_extra": "ok"},
            "no-extra",
            "SIGSEGV",
            ["default", "drop-amx", "no-extra"],
        ),
        (
            {"default": "timed out after 60 s", "drop_amx": "ok"},
            "drop-amx",
            "timed out after 60 s",
            ["default", "drop-amx"],
        ),
        (  # nothing works: the safest mode, and the load itself will say what fails
            {"default": "SIGSEGV", "drop_amx": "SIGSEGV", "no_extra": "SIGSEGV"},
            "no-extra",
            "SIGSEGV",
            ["default", "drop-amx", "no-extra"],
        ),
    ],
)
def test_a_crashing_amx_path_is_avoided(outcomes, mode, detail, asked, cache):
    script = Script(**outcomes)
    status = decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=script)
    assert (status.state, status.load_mode, status.detail) == ("avoided", mode, detail)
    assert status.describe().startswith(f"AMX: crashes in this llama.cpp build ({detail} in the probe)")
    assert "GGML_NATIVE=OFF" in status.rebuild_hint and "AMX" not in status.rebuild_hint.split(":", 1)[1]
    assert script.asked == asked
    remembered = decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=never)
    assert (remembered.state, remembered.load_mode) == ("avoided", mode)


def test_a_new_build_cpu_or_damaged_file_probes_again(cache, monkeypatch):
    decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=Script(default="ok"))
    other_cpu = AMX_CPU.replace("8488C", "8580").replace("stepping\t: 8", "stepping\t: 2")
    script = Script(default="SIGSEGV", drop_amx="ok")
    assert (
        decide("auto", cpuinfo=other_cpu, system_info=AMX_BUILD, cache=cache, runner=script).state
        == "avoided"
    )
    assert script.asked == ["default", "drop-amx"]
    # both verdicts are kept, each under its own key
    assert len(json.loads(cache.path.read_text())) == 2

    monkeypatch.setattr(amx, "build_fingerprint", lambda: "llama-cpp-python 9.9.9 rebuilt")
    script = Script(default="ok")
    assert decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=script).state == "used"
    assert script.asked == ["default"]

    for damage in ("{not json", "[]", '{"%s": {"works": "yes"}}', ""):
        cache.path.write_text(damage.replace("%s", amx.probe_key(AMX_CPU)))
        script = Script(default="ok")
        assert (
            decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=script).state == "used"
        )
        assert script.asked == ["default"], damage


def test_doctor_mode_reports_but_never_probes(cache):
    status = decide(
        "auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=never, may_probe=False
    )
    assert (status.state, status.detail) == ("unknown", "not probed yet")
    assert not cache.path.exists()


# -- real child processes --------------------------------------------------------------------------


def test_a_child_killed_by_sigsegv_is_a_crash_not_ours():
    run = run_child("default", command=SEGV)
    assert (run.ok, run.detail) == (False, "SIGSEGV")


def test_a_child_stopped_by_ctrl_c_or_kill_is_no_verdict(cache):
    """The user's Ctrl-C reaches the probe child too: that is an interruption, never a crash to remember."""
    for sig in ("SIGINT", "SIGTERM"):
        stopped = [sys.executable, "-c", f"import os, signal; os.kill(os.getpid(), signal.{sig})"]
        with pytest.raises(KeyboardInterrupt):
            decide(
                "auto",
                cpuinfo=AMX_CPU,
                system_info=AMX_BUILD,
                cache=cache,
                runner=lambda mode, cmd=stopped: run_child(mode, command=cmd),
            )
    assert not cache.path.exists()


def test_a_hanging_child_times_out():
    run = run_child("default", command=[sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert not run.ok and run.detail == "timed out after 0.5 s"


def test_a_child_that_fails_says_why():
    run = run_child("default", command=[sys.executable, "-c", "import sys; sys.exit('no llama here')"])
    assert not run.ok and run.detail == "exit 1: no llama here"


def test_crash_in_a_real_child_falls_back_to_a_real_working_mode(cache):
    """The default mode dies by SIGSEGV (the seam); the next mode is the real probe program."""
    asked = []

    def runner(mode: str) -> ProbeRun:
        asked.append(mode)
        return run_child(mode, command=SEGV if mode == "default" else None)

    status = decide("auto", cpuinfo=AMX_CPU, system_info=AMX_BUILD, cache=cache, runner=runner)
    assert (status.state, status.load_mode, status.detail) == ("avoided", "drop-amx", "SIGSEGV")
    assert asked == ["default", "drop-amx"]


@pytest.mark.parametrize("mode", ["drop-amx", "no-extra"])
def test_the_probe_program_runs_the_fallback_modes_on_any_cpu(mode):
    res = subprocess.run(
        [sys.executable, "-m", "starchat_cli.engine.llamacpp.amx_probe", mode],
        capture_output=True,
        timeout=120,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr.decode()
    report = json.loads(res.stdout.decode().strip().splitlines()[-1])
    assert report["ok"] and report["mode"] == mode and not report["amx_buffer"]
    if mode == "no-extra":
        assert not report["repack_buffer"]


def test_dropping_amx_keeps_the_other_buffer_types():
    """In a child: the CPU's extra buffer types before and after dropping AMX (order kept)."""
    code = (
        "import json; from starchat_cli.engine.llamacpp import ggml_bufts as g\n"
        "before = g.cpu_extra_buffer_types(); ok = g.drop_cpu_buffer_type('AMX')\n"
        "print(json.dumps([before, ok, g.cpu_extra_buffer_types(), g.drop_cpu_buffer_type('AMX')]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr.decode()
    before, ok, after, again = json.loads(res.stdout)
    assert ok and again
    assert after == [name for name in before if name != "AMX"]
    assert ("AMX" in before) == (real_cpu_has_amx() and real_build_has_amx())
    if "REPACK = 1" in __import__("llama_cpp").llama_print_system_info().decode():
        assert "CPU_REPACK" in after


def test_repack_is_kept_where_amx_is_dropped():
    """On x86 with AVX2 the probe model's Q4_0 weights go to the repack buffer in drop-amx mode."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    if "REPACK = 1" not in info or "AVX2 = 1" not in info:
        pytest.skip("this llama.cpp build has no x86 CPU repack")
    res = subprocess.run(
        [sys.executable, "-m", "starchat_cli.engine.llamacpp.amx_probe", "drop-amx"],
        capture_output=True,
        timeout=120,
        cwd=REPO,
    )
    assert json.loads(res.stdout.decode().splitlines()[-1])["repack_buffer"] is True


# -- the faces -----------------------------------------------------------------------------------------


def test_status_lines_read_well():
    assert AmxStatus("absent", detail="no AMX in this CPU").describe() == "AMX: not used (no AMX in this CPU)"
    assert AmxStatus("used").describe() == "AMX: used"
    assert (
        "loading without it (no CPU repack either)" in AmxStatus("avoided", "no-extra", "SIGSEGV").describe()
    )
    assert AmxStatus("used").rebuild_hint == ""


def test_help_and_model_free_commands_never_probe(isolated_home: Path, monkeypatch):
    monkeypatch.delenv("STARCHAT_AMX")
    for args in (["--help"], ["ask", "--help"], ["list"], ["paths"], ["doctor"]):
        res = run_starchat(args)
        assert res.returncode in (0, 1), (args, res.stderr)
        assert not (isolated_home / "cache" / "amx-probe.json").exists(), args


def test_doctor_reports_amx(isolated_home: Path, monkeypatch):
    monkeypatch.delenv("STARCHAT_AMX")
    data = json.loads(run_starchat(["doctor", "--json"]).stdout)
    assert data["amx"]["cpu"] == real_cpu_has_amx()
    assert data["amx"]["build"] == real_build_has_amx()
    if data["amx"]["cpu"] and data["amx"]["build"]:
        assert data["amx"]["state"] == "unknown"  # doctor without --load does not probe
        cache = ProbeCache(isolated_home / "cache" / "amx-probe.json")
        cache.put(amx.probe_key(amx.cpu_info_text()), amx.probe(Script(default="SIGSEGV", drop_amx="ok")))
        text = run_starchat(["doctor"]).stdout.decode()
        assert "AMX: crashes in this llama.cpp build (SIGSEGV in the probe), loading without it" in text
        assert "to rebuild llama-cpp-python without AMX" in text and "delete " in text
    else:
        assert data["amx"]["state"] == "absent"
        assert "AMX: not used" in run_starchat(["doctor"]).stdout.decode()


def test_a_bad_amx_setting_is_a_config_error(monkeypatch):
    monkeypatch.setenv("STARCHAT_AMX", "sometimes")
    res = run_starchat(["ask", "-m", "demo", "hi"])
    assert res.returncode == 3
    assert b"STARCHAT_AMX" in res.stderr and b'"auto", "on" or "off"' in res.stderr


@pytest.mark.e2e
def test_readme_command_1_answers_on_this_cpu(isolated_home: Path, monkeypatch):
    """README command 1 with no setting at all: the probe decides, the answer comes, exit 0."""
    if not (real_cpu_has_amx() and real_build_has_amx()):
        pytest.skip(
            "this CPU or llama.cpp build has no AMX: the crash this guards against cannot happen here"
        )
    monkeypatch.delenv("STARCHAT_AMX")
    res = run_starchat(["ask", "-t", "0", "Write a Python function that reverses a string."])
    assert res.returncode == 0, res.stderr.decode()
    assert "[::-1]" in res.stdout.decode()
    assert b"AMX" not in res.stderr  # said under -v and in doctor, not on every call
    verbose = run_starchat(
        ["ask", "-v", "-t", "0", "-n", "8", "Write a Python function that reverses a string."]
    )
    assert verbose.returncode == 0
    line = [x for x in verbose.stderr.decode().splitlines() if "AMX:" in x]
    assert len(line) == 1 and ("AMX: used" in line[0] or "loading without it" in line[0]), verbose.stderr
