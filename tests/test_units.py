"""core.units: the one byte formatter and the free-space helpers every message relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from starchat_cli.core import units
from starchat_cli.core.errors import ExitCode, StarchatError
from starchat_cli.core.units import (
    GB,
    GIB,
    MB,
    MIB,
    disk_usage_at,
    ensure_free_space,
    existing_parent,
    format_bytes,
    free_bytes,
)


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),  # the first size shown in a bigger unit
        (1_500, "1.5 KB"),
        (999_949, "999.9 KB"),
        (999_999, "1000.0 KB"),  # under 1000 KB before rounding, so still KB
        (1_000_000, "1.0 MB"),
        (98_400_000, "98.4 MB"),
        (9_860_000_000, "9.9 GB"),
        (10**12, "1.0 TB"),
        (5 * 10**15, "5000.0 TB"),  # TB is the largest unit
        (-1_500, "-1.5 KB"),
    ],
)
def test_automatic_unit_is_decimal_and_keeps_the_number_under_1000(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    "n, unit, digits, text",
    [
        (22_000 * MIB, "GiB", 1, "21.5 GiB"),  # doctor: nvidia-smi reports MiB
        (23_034 * MIB, "GiB", 1, "22.5 GiB"),
        (8 * GIB, "GiB", 1, "8.0 GiB"),
        (GIB - 1, "GiB", 1, "1.0 GiB"),
        (10**15, "GB", 2, "1000000.00 GB"),  # pull: the size of a download
        (123_456_789, "GB", 2, "0.12 GB"),
        (100_000_000, "GB", 2, "0.10 GB"),
        (0, "GB", 2, "0.00 GB"),
        (256 * MIB, "MiB", 0, "256 MiB"),
        (1_500, "B", 0, "1500 B"),
    ],
)
def test_a_fixed_unit_and_precision(n, unit, digits, text):
    assert format_bytes(n, unit, digits) == text


def test_unit_constants_and_an_unknown_unit():
    assert (MB, GB, MIB, GIB) == (10**6, 10**9, 2**20, 2**30)
    assert format_bytes(GIB, "GiB") == "1.0 GiB" and format_bytes(GIB, "GB") == "1.1 GB"
    with pytest.raises(ValueError, match="unknown unit 'gb'"):
        format_bytes(1, "gb")


def test_engine_modules_share_the_constants():
    from starchat_cli.engine.llamacpp import hardware, offload

    assert offload.GIB is GIB and offload.MIB is MIB and hardware.GIB is GIB


def test_existing_parent_walks_up_to_the_first_folder_that_exists(tmp_path):
    (tmp_path / "a").mkdir()
    assert existing_parent(tmp_path / "a" / "b" / "c") == tmp_path / "a"
    assert existing_parent(tmp_path / "a") == tmp_path / "a"
    f = tmp_path / "a" / "file.bin"
    f.write_bytes(b"x")
    assert existing_parent(f) == f
    assert existing_parent(f / "under-a-file") == f  # a file is where the walk stops too


class FakeDisk:
    """Stands in for shutil.disk_usage and remembers which path it was asked about."""

    def __init__(self, free: int, total: int = 10**12) -> None:
        self.free, self.total = free, total
        self.asked: list[Path] = []

    def __call__(self, path):
        if not Path(path).exists():
            raise FileNotFoundError(path)  # what the real call does
        self.asked.append(Path(path))
        return (self.total, self.total - self.free, self.free)


@pytest.fixture
def disk(monkeypatch) -> FakeDisk:
    fake = FakeDisk(free=5 * GB)
    monkeypatch.setattr(units.shutil, "disk_usage", fake)
    return fake


def test_free_bytes_of_a_folder_not_made_yet_measures_its_parent(tmp_path, disk):
    missing = tmp_path / "models" / "new"
    assert free_bytes(missing) == 5 * GB
    assert disk.asked == [tmp_path]
    usage = disk_usage_at(missing)
    assert (usage.total, usage.used, usage.free) == (10**12, 10**12 - 5 * GB, 5 * GB)


def test_real_disk_usage(tmp_path):
    usage = disk_usage_at(tmp_path / "not" / "yet")
    assert usage.total >= usage.free > 0
    assert free_bytes(tmp_path) == pytest.approx(usage.free, rel=0.01)


def test_ensure_free_space_boundary(tmp_path, disk):
    ensure_free_space(5 * GB, tmp_path)  # exactly what is free: fits
    ensure_free_space(4 * GB, tmp_path, margin=GB)
    with pytest.raises(StarchatError):
        ensure_free_space(5 * GB + 1, tmp_path)
    with pytest.raises(StarchatError):
        ensure_free_space(4 * GB, tmp_path, margin=GB + 1)


def test_the_error_names_both_numbers_and_the_folder(tmp_path, disk):
    where = tmp_path / "cache" / "models--org--x"
    with pytest.raises(StarchatError) as err:
        ensure_free_space(12_340_000_000, where, purpose="to write")
    assert err.value.exit_code == ExitCode.ERROR
    assert str(err.value) == (
        f"not enough disk space in {where}: 12.34 GB to write but 5.00 GB free; free some space"
    )
    assert "\n" not in str(err.value)
    assert disk.asked == [tmp_path]


def test_hub_download_check_keeps_its_message(tmp_path, disk):
    from starchat_cli.models.hub import check_disk_space

    disk.free = 500_000_000
    check_disk_space(500_000_000 - 256 * MIB, tmp_path)  # fits with the 256 MiB margin
    with pytest.raises(StarchatError) as err:
        check_disk_space(10**15, tmp_path / "hub")
    assert str(err.value) == (
        f"not enough disk space in {tmp_path / 'hub'}: 1000000.00 GB to download (+0.27 GB margin) "
        "but 0.50 GB free; free some space or set HF_HOME to a bigger disk"
    )


def test_doctor_disk_entry(disk, monkeypatch):
    from starchat_cli.core.paths import get_paths
    from starchat_cli.services.doctor import collect

    models = get_paths().models_dir  # not made yet in a fresh STARCHAT_HOME
    assert collect(2048, load=False)["paths"]["models"] == {
        "path": str(models),
        "exists": False,
        "free_bytes": 5 * GB,
        "total_bytes": 10**12,
    }

    def broken(path):
        raise PermissionError(path)

    monkeypatch.setattr(units.shutil, "disk_usage", broken)
    assert collect(2048, load=False)["paths"]["models"] == {"path": str(models), "free_bytes": None}
