"""Schedules and the database check end to end: the real ``watcher run`` and the real CLI."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import (
    Doc,
    Start,
    cli,
    corrupt_db,
    maint,
    make_db,
    write_config,
)


def logs(data_dir: Path) -> Path:
    return data_dir / "mw" / "log" / "sched" / "dynamic"


def hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M")


def window_around_now(now: datetime) -> tuple[str, str]:
    """``start``/``end`` in 10-minute steps with ``start <= now < end`` (UTC), at least 10 minutes
    of it still ahead; near midnight the end wraps to the next day (a window across midnight)."""
    start = now.replace(minute=now.minute - now.minute % 10, second=0, microsecond=0)
    return hhmm(start), hhmm(start + timedelta(minutes=20))


def named(job: str) -> Callable[[Doc], bool]:
    return lambda e: e["watcher"].get("job", {}).get("name") == job


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 26, 14, 37, 12, tzinfo=UTC), ("14:30", "14:50")),
        (datetime(2026, 11, 26, 23, 55, 59, tzinfo=UTC), ("23:50", "00:10")),
        (datetime(2026, 11, 26, 0, 0, 0, tzinfo=UTC), ("00:00", "00:20")),
    ],
)
def test_window_around_now_helper(now: datetime, expected: tuple[str, str]) -> None:
    """The helper brackets the time in 10-minute steps, wrapping past midnight."""
    assert window_around_now(now) == expected


def test_window_around_now_enters_maintenance_at_start(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A service started inside a configured window opens it at once and writes the maint file."""
    start, end = window_around_now(datetime.now(UTC))
    config = write_config(
        tmp_path / "watcher.toml",
        f"""
timezone = "UTC"

[[maintenance.windows]]
name = "now"
start = "{start}"
end = "{end}"
message = "Window around now"
""",
    )
    svc = service(config)
    opened = svc.wait_for("window.opened", lambda e: e["watcher"]["window"]["name"] == "now")
    assert opened["watcher"]["held"] is True
    svc.wait_for("maintenance.entered")
    doc = json.loads(maint(data_dir).read_bytes())
    assert doc["message"] == "Window around now"
    assert [(h["reason"], h["name"]) for h in doc["holds"]] == [("window", "now")]
    status = json.loads(cli("status", "--json", data_dir=data_dir, config=config).stdout)
    assert status["maintenance"]["active"] is True


def test_jobs_shows_a_job_inside_a_window_as_skipped(data_dir: Path, tmp_path: Path) -> None:
    """``watcher jobs`` marks jobs at a time inside a window or at its end as skipped, naming it."""
    config = write_config(
        tmp_path / "watcher.toml",
        """
timezone = "UTC"

[[maintenance.windows]]
name = "nightly"
start = "02:00"
end = "03:00"

[[jobs]]
name = "inside"
type = "dbcheck"
at = "02:30"

[[jobs]]
name = "at-end"
type = "dbcheck"
at = "03:00"

[[jobs]]
name = "outside"
type = "dbcheck"
at = "04:00"
""",
    )
    done = cli("jobs", data_dir=data_dir, config=config)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "SKIPPED (inside window nightly)" in lines["inside"]
    assert "SKIPPED (inside window nightly)" in lines["at-end"]
    assert "SKIPPED" not in lines["outside"] and "daily at 04:00" in lines["outside"]

    rows = json.loads(cli("jobs", "--json", data_dir=data_dir, config=config).stdout)
    skipped_by = {row["name"]: row.get("skipped_by") for row in rows if row["configured"]}
    assert skipped_by == {"inside": "nightly", "at-end": "nightly", "outside": None}


# --- watcher check-db -----------------------------------------------------------------------


def demo_databases(data_dir: Path) -> int:
    """How many SQLite databases the demo data dir holds (what a check covers)."""
    return len([p for p in (data_dir / "mw" / "data").iterdir() if p.suffix in (".db", ".sqlite")])


def test_check_db_on_healthy_data(data_dir: Path) -> None:
    """The manual check passes healthy databases, exits 0 and changes nothing."""
    data = data_dir / "mw" / "data"
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    done = cli("check-db", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert "OK       mail.db" in done.stdout and "OK       schedule.sqlite" in done.stdout
    n = demo_databases(data_dir)
    assert f"{n} database(s): {n} ok, 0 corrupt or unreadable" in done.stdout
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert not maint(data_dir).exists()
    assert not (logs(data_dir) / "Optimize.log").exists()


def test_check_db_on_corrupted_database(data_dir: Path, tmp_path: Path) -> None:
    """A corrupted database makes the manual check exit 1, naming it (also in --output)."""
    corrupt_db(make_db(data_dir / "mw" / "data" / "bad.db"))
    done = cli("check-db", data_dir=data_dir)
    assert done.returncode == 1
    assert "CORRUPT  bad.db" in done.stdout and "OK       mail.db" in done.stdout
    assert "CORRUPT: bad.db" in done.stderr
    assert not maint(data_dir).exists()

    report = tmp_path / "report.txt"
    done = cli("check-db", "--output", str(report), data_dir=data_dir)
    assert done.returncode == 1 and "CORRUPT  bad.db" in report.read_text()


@pytest.mark.skipif(
    shutil.which("sqlite3") is None, reason="the sqlite3 command-line tool is missing"
)
def test_sqlite3_cli_agrees_the_database_is_corrupt(data_dir: Path) -> None:
    """The ``sqlite3`` tool's integrity_check also reports the deliberately corrupted database."""
    bad = corrupt_db(make_db(data_dir / "mw" / "data" / "bad.db"))
    sqlite3_cli = shutil.which("sqlite3")
    assert sqlite3_cli is not None
    done = subprocess.run(
        [sqlite3_cli, str(bad), "PRAGMA integrity_check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.stdout + done.stderr).strip() != "ok"
    assert cli("check-db", data_dir=data_dir).returncode == 1


# --- the dbcheck job in the service ---------------------------------------------------------


def test_dbcheck_twice_appends_logs_and_replaces_results(data_dir: Path, service: Start) -> None:
    """Two runs: Maintenance.log and Optimize.log hold both, the *_result.log only the latest."""
    svc = service()
    for _ in range(2):
        done = cli("trigger", "dbcheck", "--wait", data_dir=data_dir)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "finished" in done.stdout
    assert len([e for e in svc.events if e["event"]["action"] == "job.finished"]) == 2
    assert not maint(data_dir).exists()
    for stem, start_tag, end_tag in (
        ("Maintenance", "check.start", "check.end"),
        ("Optimize", "optimise.start", "optimise.end"),
    ):
        appended = (logs(data_dir) / f"{stem}.log").read_text()
        latest = (logs(data_dir) / f"{stem}_result.log").read_text()
        tags = [line.split()[1] for line in appended.splitlines()]
        assert tags.count(start_tag) == 2 and tags.count(end_tag) == 2, appended
        assert [line.split()[1] for line in latest.splitlines()].count(start_tag) == 1
        assert appended.endswith(latest) and appended != latest
    latest_check = (logs(data_dir) / "Maintenance_result.log").read_text()
    assert "check.db path=mail.db result=ok" in latest_check
    n = demo_databases(data_dir)
    assert f"check.end result=ok databases={n} ok={n} corrupt=0" in latest_check
    assert (
        "optimise.db path=mail.db optimised=yes"
        in (logs(data_dir) / "Optimize_result.log").read_text()
    )


def test_events_keep_flowing_while_dbcheck_runs(data_dir: Path, service: Start) -> None:
    """While the check waits on a locked database, an operator's rm and touch are handled."""
    svc = service()
    mark = svc.mark()
    # An exclusive lock keeps the check busy (SQLite's busy handler) until the test lets go.
    with closing(sqlite3.connect(data_dir / "mw" / "data" / "mail.db", isolation_level=None)) as db:
        db.execute("BEGIN EXCLUSIVE")
        assert cli("trigger", "dbcheck", data_dir=data_dir).returncode == 0
        svc.wait_for("job.started", named("dbcheck"), after=mark)
        assert maint(data_dir).exists()

        maint(data_dir).unlink()
        svc.wait_for("maintenance.released_by_operator", after=mark)
        svc.wait_for(
            "maintenance.hold_released", lambda e: e["watcher"].get("job_running") is True, mark
        )
        maint(data_dir).touch()
        svc.wait_for("maintenance.adopted", after=mark)
        assert "job.finished" not in svc.actions()[mark:]  # the check cannot end: still locked
        db.execute("ROLLBACK")
    svc.wait_for("job.finished", named("dbcheck"), after=mark)
    assert maint(data_dir).exists()  # the job's end does not take the operator's file away
