"""``watcher diagnose``: the environment report for support, human-readable and ``--json``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, write_config
from tests.test_disk_e2e import small_filesystem
from watcher import __version__
from watcher.demo import create_demo

SCRIPT = Path(sys.executable).parent / "watcher"  # the console script an operator runs


def diagnose_json(data_dir: Path, config: Path | None = None) -> tuple[int, dict[str, Any]]:
    """Run ``watcher diagnose --json``; (exit code, the report)."""
    done = cli("diagnose", "--json", data_dir=data_dir, config=config)
    assert done.stderr == ""
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def tokyo(tmp_path: Path) -> Path:
    """A valid config naming its time zone."""
    return write_config(tmp_path / "watcher.toml", 'timezone = "Asia/Tokyo"\n')


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A config with two problems: a level that is not a level, and an unknown key."""
    return write_config(tmp_path / "broken.toml", '[disk]\nwarn = "lots"\nsurprise = 1\n')


def test_json_report_has_the_environment(data_dir: Path, tokyo: Path) -> None:
    """--json names OS and kernel, Python, package versions, inotify limits and the time zone."""
    code, report = diagnose_json(data_dir, tokyo)
    assert code == 0
    assert report["os"]["system"] == platform.system()
    assert report["os"]["release"] == platform.release()  # the kernel
    assert report["python"]["version"] == platform.python_version()
    assert Path(report["python"]["executable"]).is_absolute()
    packages = report["packages"]
    assert packages["watcher"] == __version__
    for name in ("watchfiles", "anyio", "structlog", "psutil", "orjson"):
        assert packages[name], f"{name} version missing"
    if Path("/proc/sys/fs/inotify").is_dir():
        limits = Path("/proc/sys/fs/inotify")
        assert report["inotify"] == {
            name: int((limits / name).read_text())
            for name in ("max_user_watches", "max_user_instances", "max_queued_events")
        }
    assert report["timezone"] == "Asia/Tokyo"


def test_json_report_has_absolute_paths(data_dir: Path, tokyo: Path) -> None:
    """The data dir, state dir, executable's directory and config file are absolute paths."""
    _code, report = diagnose_json(data_dir, tokyo)
    paths = report["paths"]
    assert paths["data_dir"] == str(data_dir.resolve())
    assert paths["state"] == str((data_dir / "mw" / "watcher").resolve())
    assert paths["maint_file"] == str((data_dir / "mw" / "data" / "maint").resolve())
    assert paths["config"] == str(tokyo.resolve())
    assert Path(paths["executable_dir"]).is_absolute()
    assert all(Path(p).is_absolute() for p in paths.values() if p)


def test_relative_data_dir_is_reported_absolute(data_dir: Path) -> None:
    """A data dir given relative to the working directory is reported as an absolute path."""
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "diagnose", "--json", "--data-dir", data_dir.name],
        capture_output=True,
        text=True,
        cwd=data_dir.parent,
        env={**os.environ, "WATCHER_CONFIG": ""},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["paths"]["data_dir"] == str(data_dir.resolve())


@pytest.mark.skipif(not SCRIPT.exists(), reason="the watcher console script is not installed")
def test_executable_dir_is_where_the_watcher_command_lives(data_dir: Path) -> None:
    """Run as the installed ``watcher`` command, the executable's directory is the script's."""
    done = subprocess.run(
        [str(SCRIPT), "diagnose", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "WATCHER_CONFIG": ""},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["paths"]["executable_dir"] == str(SCRIPT.parent.resolve())


def test_json_report_has_the_data_dirs_filesystem(data_dir: Path) -> None:
    """Disk total, free and inodes of the data dir's filesystem, its type and the watching mode."""
    _code, report = diagnose_json(data_dir)
    fs = report["filesystem"]
    st = os.statvfs(data_dir)
    assert fs["total"] == st.f_blocks * st.f_frsize
    assert 0 <= fs["free"] <= fs["total"]
    if st.f_files:
        assert fs["inodes_total"] == st.f_files
        assert 0 <= fs["inodes_free"] <= fs["inodes_total"]
    assert isinstance(fs["type"], str) and fs["type"]
    assert fs["network"] is False
    assert fs["watching"] == "inotify"


def test_poll_mode_is_reported(data_dir: Path, tmp_path: Path) -> None:
    """With ``[watch] mode = "poll"`` the report says watching will poll."""
    config = write_config(tmp_path / "poll.toml", '[watch]\nmode = "poll"\n')
    _code, report = diagnose_json(data_dir, config)
    assert report["filesystem"]["watching"] == "poll"


@pytest.mark.root
def test_filesystem_type_and_numbers_on_a_real_small_filesystem(tmp_path: Path) -> None:
    """On a freshly mounted 64 MiB filesystem the report gives its type and exact size."""
    with small_filesystem(tmp_path) as fs:
        root = fs / "data"
        create_demo(root)
        levels = '[disk]\nwarn = "24MiB"\nmaintenance = "16MiB"\ncritical = "8MiB"\n'
        code, report = diagnose_json(root, write_config(tmp_path / "small.toml", levels))
        st = os.statvfs(root)
    assert code == 0, report["config_check"]
    reported = report["filesystem"]
    assert reported["type"] in ("tmpfs", "ext4")
    assert reported["total"] == st.f_blocks * st.f_frsize <= 64 * 1024**2
    assert reported["free"] == st.f_bavail * st.f_frsize
    assert reported["inodes_total"] == st.f_files


def test_human_report_lists_every_section(data_dir: Path, tokyo: Path) -> None:
    """The default output is readable ``key: value`` lines covering every part of the report."""
    done = cli("diagnose", data_dir=data_dir, config=tokyo)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for heading in (
        "os:",
        "python:",
        "packages:",
        "paths:",
        "inotify:",
        "filesystem:",
        "config_check:",
    ):
        assert heading in text.splitlines(), heading
    assert f"  release: {platform.release()}" in text
    assert f"  version: {platform.python_version()}" in text
    assert f"  watcher: {__version__}" in text
    assert f"  data_dir: {data_dir.resolve()}" in text
    assert f"  state: {(data_dir / 'mw' / 'watcher').resolve()}" in text
    assert "  executable_dir: /" in text
    st = os.statvfs(data_dir)
    assert f"  total: {st.f_blocks * st.f_frsize}" in text
    assert "  free: " in text and "  inodes_free: " in text and "  type: " in text
    assert "  watching: inotify" in text
    assert "  max_user_watches: " in text or not Path("/proc/sys/fs/inotify").is_dir()
    assert "timezone: Asia/Tokyo" in text
    assert "  ok: True" in text
    assert not text.lstrip().startswith("{")


def test_config_check_result_matches_config_check(data_dir: Path, tokyo: Path) -> None:
    """A config that ``config check`` accepts is reported ok with no problems."""
    assert cli("config", "check", data_dir=data_dir, config=tokyo).returncode == 0
    code, report = diagnose_json(data_dir, tokyo)
    assert code == 0
    assert report["config_check"] == {"ok": True, "problems": []}


def test_broken_config_exits_1_and_lists_each_problem(data_dir: Path, broken: Path) -> None:
    """A broken config is reported, not raised: exit 1, every problem named by file and key."""
    checked = cli("config", "check", data_dir=data_dir, config=broken)
    assert checked.returncode == 2
    code, report = diagnose_json(data_dir, broken)
    assert code == 1
    assert report["config_check"]["ok"] is False
    problems = report["config_check"]["problems"]
    assert any(p.startswith(f"{broken}: disk.warn: ") for p in problems), problems
    assert any(p.startswith(f"{broken}: disk.surprise: unknown key") for p in problems), problems
    assert report["os"]["system"] == platform.system()  # the rest of the report is still there
    assert report["packages"]["watcher"] == __version__


def test_broken_config_still_reports_the_data_dirs_filesystem(data_dir: Path, broken: Path) -> None:
    """With a broken config and a data dir that exists, the report still gives the data dir's
    paths, its filesystem and the time zone: support needs them most when the config fails."""
    _code, report = diagnose_json(data_dir, broken)
    assert report["paths"].get("data_dir") == str(data_dir.resolve())
    st = os.statvfs(data_dir)
    assert report.get("filesystem", {}).get("total") == st.f_blocks * st.f_frsize
    assert report.get("timezone")


def test_broken_config_in_human_form(data_dir: Path, broken: Path) -> None:
    """The human report of a broken config lists the problems and exits 1, without a traceback."""
    done = cli("diagnose", data_dir=data_dir, config=broken)
    assert done.returncode == 1
    assert "  ok: False" in done.stdout
    assert "disk.warn" in done.stdout and "disk.surprise" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_unreadable_toml_is_a_listed_problem(data_dir: Path, tmp_path: Path) -> None:
    """A config that is not TOML at all is one listed problem (its syntax), exit 1."""
    config = write_config(tmp_path / "bad.toml", "data_dir = \n")
    code, report = diagnose_json(data_dir, config)
    assert code == 1
    assert any("(syntax)" in p for p in report["config_check"]["problems"])


def test_missing_data_dir_is_a_listed_problem(tmp_path: Path) -> None:
    """A data dir that does not exist is reported as a config problem, exit 1."""
    code, report = diagnose_json(tmp_path / "nowhere")
    assert code == 1
    assert any(
        "data_dir" in p and "does not exist" in p for p in report["config_check"]["problems"]
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_output_writes_the_report_to_a_file(
    data_dir: Path, tmp_path: Path, tokyo: Path, as_json: bool
) -> None:
    """--output F writes the report to F (and says so) instead of printing it."""
    out = tmp_path / "report.txt"
    args = ["diagnose", "--output", str(out), *(["--json"] if as_json else [])]
    done = cli(*args, data_dir=data_dir, config=tokyo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report written to {out}"
    written = out.read_text()
    if as_json:
        report = json.loads(written)
        assert report["paths"]["data_dir"] == str(data_dir.resolve())
        assert report["timezone"] == "Asia/Tokyo"
    else:
        assert "filesystem:" in written and "timezone: Asia/Tokyo" in written


def test_output_is_written_for_a_broken_config_too(
    data_dir: Path, tmp_path: Path, broken: Path
) -> None:
    """--output still writes the report when the config is broken, and the exit code is 1."""
    out = tmp_path / "report.json"
    done = cli("diagnose", "--json", "--output", str(out), data_dir=data_dir, config=broken)
    assert done.returncode == 1
    assert json.loads(out.read_text())["config_check"]["ok"] is False
