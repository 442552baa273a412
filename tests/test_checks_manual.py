"""Checks as the manual means them: one saved file for check and environment, the 10 MB
floor in ``diagnose``, and the maint file's times in the configured zone."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Start, cli, maint, write_config
from tests.test_cli_faults import fill
from tests.test_disk_e2e import small_filesystem
from watcher.demo import create_demo


def test_check_db_output_holds_the_environment_report(data_dir: Path, tmp_path: Path) -> None:
    """``check-db --output F`` saves the database check and the environment report together."""
    out = tmp_path / "check.txt"
    done = cli("check-db", "--output", str(out), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    check, _sep, environment = text.partition("Environment (watcher diagnose)\n")
    assert "Database check (integrity)" in check and "DISK     ok" in check
    assert "filesystem:" in environment and "free:" in environment
    assert f"data_dir: {data_dir.resolve()}" in environment
    assert "config_check:" in environment
    plain = cli("check-db", data_dir=data_dir)  # on stdout, the check alone, as before
    assert "Environment" not in plain.stdout


@pytest.mark.root
def test_diagnose_flags_free_space_under_the_floor(tmp_path: Path) -> None:
    """On a filesystem with under 10 MB free, diagnose flags it and exits 1 with one line."""
    with small_filesystem(tmp_path, 16) as fs:
        root = fs / "data"
        create_demo(root)
        healthy = json.loads(cli("diagnose", "--json", data_dir=root).stdout)
        assert healthy["filesystem"]["below_floor"] is False and healthy["warnings"] == []
        fill(fs)
        done = cli("diagnose", "--json", data_dir=root)
        assert done.returncode == 1, done
        report = json.loads(done.stdout)
        assert report["filesystem"]["below_floor"] is True
        assert report["filesystem"]["floor"] == 10 * 1024 * 1024
        assert report["filesystem"]["free"] < 10 * 1024 * 1024
        assert "under the 10 MB floor" in report["warnings"][0]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("watcher: free space"), done.stderr
        for name in ("filler", "filler2"):
            os.unlink(fs / name)


def test_maint_file_carries_local_times_without_service(data_dir: Path, tmp_path: Path) -> None:
    """``enter --for`` (service down) writes start/end in UTC and in the configured zone."""
    config = write_config(tmp_path / "w.toml", 'timezone = "Asia/Tokyo"\n')
    done = cli("enter", "--for", "2h", data_dir=data_dir, config=config)
    assert done.returncode == 0, done.stderr
    doc = json.loads(maint(data_dir).read_bytes())
    assert doc["timezone"] == "Asia/Tokyo"
    assert doc["start_local"].endswith("+09:00") and doc["end_local"].endswith("+09:00")
    assert datetime.fromisoformat(doc["start_local"]) == datetime.fromisoformat(doc["start"])
    assert datetime.fromisoformat(doc["end_local"]) == datetime.fromisoformat(doc["end"])


def test_maint_file_carries_local_times_through_service(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """The running service writes ``start_local``/``end_local`` in its configured zone."""
    config = write_config(tmp_path / "w.toml", 'timezone = "America/New_York"\n')
    svc = service(config)
    mark = svc.mark()
    assert cli("enter", "--for", "1h", data_dir=data_dir, config=config).returncode == 0
    svc.wait_for("maintenance.entered", after=mark)
    doc = json.loads(maint(data_dir).read_bytes())
    assert doc["timezone"] == "America/New_York"
    local = datetime.fromisoformat(doc["start_local"])
    assert local == datetime.fromisoformat(doc["start"])
    offset = local.utcoffset()
    assert offset is not None and offset.total_seconds() in (-4 * 3600, -5 * 3600)
