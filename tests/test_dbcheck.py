"""The database check job on real SQLite files: checks, optimisation, logs and the job object."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import corrupt_db, make_db
from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed, Progress
from watcher.jobs.dbcheck import (
    JOB,
    CheckReport,
    check_databases,
    find_databases,
    format_report,
    write_logs,
)
from watcher.jobs.sqlitefiles import interrupt_on, is_database, is_side_file

SQLITE_CLI = "/usr/bin/sqlite3"
TZ = timezone(timedelta(hours=9))
PLENTY = 10**15


def clock(*times: datetime) -> Iterator[datetime]:
    """The given times, in order, for a ``now`` callable."""
    yield from times


def at(hour: int, minute: int = 0) -> datetime:
    """A fixed local time on one day."""
    return datetime(2026, 11, 26, hour, minute, tzinfo=TZ)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An empty ``mw/data`` directory."""
    path = tmp_path / "mw" / "data"
    path.mkdir(parents=True)
    return path


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mtime of every file under ``directory``."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_healthy_databases_pass(data: Path) -> None:
    """Healthy databases in nested folders, by every extension, are all reported ok."""
    for name in ("a.db", "sub/b.sqlite", "sub/deeper/c.sqlite3"):
        make_db(data / name, rows=200)
    report = check_databases(data, optimise=False)
    assert [db.path for db in report.databases] == ["a.db", "sub/b.sqlite", "sub/deeper/c.sqlite3"]
    assert all(db.ok and db.problems == () and db.error is None for db in report.databases)
    assert report.corrupt == ()
    assert report.check == "integrity"


def test_corrupted_database_is_reported_corrupt(data: Path) -> None:
    """A database with a damaged index page is corrupt, with the problems SQLite lists."""
    make_db(data / "good.db")
    corrupt_db(make_db(data / "bad.db"))
    report = check_databases(data, optimise=True, free_space=lambda _p: PLENTY)
    bad = {db.path: db for db in report.databases}["bad.db"]
    assert report.corrupt == ("bad.db",)
    assert not bad.ok and bad.problems and not bad.optimised and not bad.vacuumed
    assert len(bad.problems) <= 100
    assert {db.path: db for db in report.databases}["good.db"].vacuumed
    if not Path(SQLITE_CLI).exists():
        pytest.skip(f"{SQLITE_CLI} is not installed; cannot compare with the CLI")
    cli = subprocess.run(
        [SQLITE_CLI, str(data / "bad.db"), "PRAGMA integrity_check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.stdout.strip() != "ok"


def test_non_database_with_db_extension_is_an_error(data: Path) -> None:
    """A text file named ``*.db`` is reported not ok, with SQLite's error, and never optimised."""
    (data / "notes.db").write_text("this is not a database, only text long enough " * 20)
    report = check_databases(data, optimise=True, free_space=lambda _p: PLENTY)
    (db,) = report.databases
    assert report.corrupt == ("notes.db",)
    assert db.error == "file is not a database" and db.problems == ()
    assert db.verdict == "error" and not db.optimised


def test_find_databases_by_header_and_extension(data: Path) -> None:
    """Databases are found by extension or header, never side files, other files or maint."""
    make_db(data / "a.db", rows=10)
    make_db(data / "noext", rows=10)
    make_db(data / "maint.sqlite", rows=10)
    for name in ("a.db-wal", "a.db-shm", "a.db-journal", "readme.txt"):
        (data / name).write_bytes(b"SQLite format 3\x00" if name != "readme.txt" else b"hi")
    (data / "broken.sqlite3").write_bytes(b"garbage header" * 10)
    (data / "link.db").symlink_to(data / "a.db")
    found = find_databases(data, maint_file=data / "maint.sqlite")
    assert [p.name for p in found] == ["a.db", "broken.sqlite3", "noext"]


def test_logs_after_two_runs(data: Path, tmp_path: Path) -> None:
    """Appended logs hold both runs; the result logs hold only the latest one."""
    make_db(data / "app.db", rows=100)
    logs = tmp_path / "mw" / "log" / "sched" / "dynamic"
    first = clock(at(3, 30), at(3, 31))
    second = clock(at(4, 30), at(4, 32))
    for times in (first, second):
        report = check_databases(
            data, optimise=True, now=lambda t=times: next(t), free_space=lambda _p: PLENTY
        )
        write_logs(logs, report)
    maintenance = (logs / "Maintenance.log").read_text()
    latest = (logs / "Maintenance_result.log").read_text()
    optimize = (logs / "Optimize.log").read_text()
    optimize_latest = (logs / "Optimize_result.log").read_text()
    for stamp in ("2026-11-26T03:30:00+09:00", "2026-11-26T04:30:00+09:00"):
        assert f"{stamp} check.start mode=integrity" in maintenance
        assert f"{stamp} optimise.start" in optimize
    assert maintenance.count("check.db path=app.db result=ok") == 2
    assert "2026-11-26T04:32:00+09:00 check.end result=ok databases=1 ok=1 corrupt=0" in latest
    assert "03:3" not in latest and "03:3" not in optimize_latest
    assert "optimise.db path=app.db optimised=yes vacuumed=yes" in optimize_latest
    assert "optimise.end optimised=1 vacuumed=1 skipped=0 cancelled=no" in optimize_latest
    assert latest.count("\n") == 4 and maintenance.count("\n") == 8  # check.disk each run
    assert sorted(p.name for p in logs.iterdir()) == [
        "Maintenance.log",
        "Maintenance_result.log",
        "Optimize.log",
        "Optimize_result.log",
    ]


def test_logs_quote_problems_and_errors(data: Path, tmp_path: Path) -> None:
    """Problems and errors are JSON-quoted, one line each; a check alone writes no Optimize log."""
    corrupt_db(make_db(data / "bad.db"))
    (data / "text.db").write_text("not a database " * 50)
    report = check_databases(data, optimise=False)
    write_logs(tmp_path, report)
    lines = (tmp_path / "Maintenance.log").read_text().splitlines()
    assert any(" check.db path=bad.db result=corrupt " in line for line in lines)
    assert any(' check.problem path=bad.db text="' in line for line in lines)
    assert any(
        ' check.db path=text.db result=error size=750 error="file is not a database"' in line
        for line in lines
    )
    assert " check.end result=corrupt databases=2 ok=0 corrupt=2 " in lines[-1]
    assert not (tmp_path / "Optimize.log").exists()


def test_vacuum_skipped_when_space_is_short(data: Path) -> None:
    """With under twice the database size free, it is optimised but not vacuumed, with numbers."""
    size = make_db(data / "app.db").stat().st_size
    seen: list[Path] = []

    def free_space(path: Path) -> int:
        seen.append(path)
        return 2 * size - 1

    (db,) = check_databases(data, optimise=True, free_space=free_space).databases
    assert db.ok and db.optimised and not db.vacuumed
    assert db.vacuum_skipped == f"insufficient_space: needs {2 * size} bytes, {2 * size - 1} free"
    assert seen == [data, data]  # the VACUUM decision, then the disk-capacity step


def test_vacuum_runs_when_space_allows(data: Path) -> None:
    """With twice the size free, VACUUM runs and returns the space of deleted rows."""
    path = make_db(data / "app.db")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DELETE FROM t WHERE n % 2 = 0")
        conn.commit()
    before = path.stat().st_size
    (db,) = check_databases(data, optimise=True, free_space=lambda _p: 2 * before).databases
    assert db.optimised and db.vacuumed and db.vacuum_skipped is None and db.error is None
    assert path.stat().st_size < before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0


def test_check_only_does_not_modify_files(data: Path) -> None:
    """The manual check (``optimise=False``) leaves every file's bytes and mtime as they were."""
    path = make_db(data / "app.db")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DELETE FROM t WHERE n % 2 = 0")
        conn.commit()
    make_db(data / "sub" / "other.sqlite", rows=50)
    before = snapshot(data)
    report = check_databases(data, optimise=False)
    assert report.corrupt == () and not any(db.optimised for db in report.databases)
    assert snapshot(data) == before


def test_quick_check_mode(data: Path) -> None:
    """``check="quick"`` passes healthy databases and still finds a damaged page."""
    make_db(data / "good.db")
    corrupt_db(make_db(data / "bad.db"))
    report = check_databases(data, check="quick", optimise=False)
    assert report.check == "quick"
    assert report.corrupt == ("bad.db",)


def test_progress_after_each_database_and_cancel_between(data: Path) -> None:
    """Progress follows each database; a cancel stops the run before the next database."""
    sizes = [make_db(data / f"{n}.db", rows=50).stat().st_size for n in "abc"]
    cancelled = threading.Event()
    reports: list[Progress] = []

    def progress(p: Progress) -> None:
        reports.append(p)
        cancelled.set()

    report = check_databases(data, optimise=False, progress=progress, cancelled=cancelled)
    assert reports == [Progress(1, 3, sizes[0], sum(sizes), "a.db")]
    assert [db.path for db in report.databases] == ["a.db"] and report.cancelled


def test_cancel_interrupts_optimisation(data: Path) -> None:
    """A cancel during optimisation interrupts it, leaves the database intact, and stops the run."""
    make_db(data / "a.db")
    make_db(data / "b.db")
    cancelled = threading.Event()

    def free_space(_path: Path) -> int:
        cancelled.set()
        return PLENTY

    report = check_databases(data, optimise=True, cancelled=cancelled, free_space=free_space)
    (db,) = report.databases
    assert report.cancelled and db.ok and not db.vacuumed
    assert db.error == "optimisation failed: interrupted"
    assert check_databases(data, optimise=False).corrupt == ()


class CancelOnceStarted(threading.Event):
    """A cancel that comes once the run has started: unset at the first look, set after.

    The run looks once before the first database; every later look (the check's progress
    handler and interrupt watcher, the run's last look) sees the cancel.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._looks = 0

    def is_set(self) -> bool:
        with self._lock:
            self._looks += 1
            return self._looks > 1


def test_cancel_interrupts_the_check_of_a_database(data: Path, tmp_path: Path) -> None:
    """A cancel during a database's check interrupts it: cancelled, no corruption claim."""
    make_db(data / "a.db")
    make_db(data / "b.db")
    report = check_databases(
        data, optimise=True, cancelled=CancelOnceStarted(), free_space=lambda _p: PLENTY
    )
    (db,) = report.databases
    assert report.cancelled and report.corrupt == ()
    assert (db.path, db.verdict, db.problems, db.error) == ("a.db", "cancelled", (), None)
    assert not db.ok and not db.optimised and report.to_dict()["corrupt"] == []
    write_logs(tmp_path, report)
    check_log = (tmp_path / "Maintenance_result.log").read_text()
    assert " check.db path=a.db result=cancelled " in check_log
    assert " check.end result=ok databases=1 ok=0 corrupt=0 cancelled=yes " in check_log
    assert " skipped=cancelled" in (tmp_path / "Optimize_result.log").read_text()
    text = format_report(report)
    assert "CANCELLED a.db" in text
    assert "1 database(s): 0 ok, 0 corrupt or unreadable, 1 not checked" in text
    assert check_databases(data, optimise=False).corrupt == ()


def test_cancel_before_the_run_checks_nothing(data: Path) -> None:
    """A cancel already set when the run starts checks no database and claims nothing."""
    make_db(data / "a.db")
    cancelled = threading.Event()
    cancelled.set()
    report = check_databases(data, optimise=True, cancelled=cancelled)
    assert report.cancelled and report.databases == () and report.corrupt == ()


class Recording(sqlite3.Connection):
    """A connection that says when it has been interrupted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interrupted = threading.Event()

    def interrupt(self) -> None:
        super().interrupt()
        self.interrupted.set()


def test_interrupt_on_stops_one_long_step(tmp_path: Path) -> None:
    """A cancel stops work the progress handler never sees (one long virtual-machine step,
    like the page walk of integrity_check), and the watcher thread ends with the block."""
    stop = threading.Event()
    with closing(sqlite3.connect(tmp_path / "x.db", factory=Recording)) as conn:

        def one_long_step() -> int:
            stop.set()
            assert conn.interrupted.wait(30)  # a bound against a hang, not a timing
            return 1

        conn.create_function("one_long_step", 0, one_long_step)
        with pytest.raises(sqlite3.OperationalError, match="interrupted"), interrupt_on(conn, stop):
            conn.execute("SELECT one_long_step()").fetchall()
        assert conn.execute("SELECT 1").fetchall() == [(1,)]  # usable after the block
    assert not any(t.name == "watcher-sqlite-cancel" for t in threading.enumerate())


@pytest.mark.parametrize(
    ("name", "head", "database"),
    [
        ("app.db", b"", True),
        ("APP.SQLite3", b"", True),
        ("noext", b"SQLite format 3\x00rest", True),
        ("notes.txt", b"SQLite format 2\x00", False),
        ("a.db-wal", b"", False),
    ],
)
def test_database_recognition(tmp_path: Path, name: str, head: bytes, database: bool) -> None:
    """By name in any case or by header; the given first bytes and the file agree."""
    path = tmp_path / name
    path.write_bytes(head)
    assert is_database(path) is is_database(path, head) is database
    assert is_side_file(name) is name.endswith("-wal")


def test_report_to_dict_and_text(data: Path) -> None:
    """The report serialises with ISO times and a corrupt list, and reads well as text."""
    make_db(data / "good.db", rows=50)
    (data / "bad.db").write_text("not sqlite at all, just text. " * 20)
    times = clock(at(1), at(2))
    report = check_databases(data, optimise=False, now=lambda: next(times))
    as_dict = report.to_dict()
    assert as_dict["started"] == "2026-11-26T01:00:00+09:00"
    assert as_dict["corrupt"] == ["bad.db"] and as_dict["check"] == "integrity"
    assert as_dict["databases"][1]["path"] == "good.db"
    text = format_report(report)
    assert "ERROR    bad.db" in text and "file is not a database" in text
    assert "OK       good.db" in text and "2 database(s): 1 ok, 1 corrupt" in text


def context(tmp_path: Path, data: Path, **args: Any) -> JobContext:
    """A job context for the data directory under ``tmp_path``."""
    mw = tmp_path / "mw"
    paths = DataPaths(
        data_dir=tmp_path,
        maint_file=data / "maint",
        data=data,
        files=mw / "file",
        archive_root=mw,
        logs=mw / "log" / "sched" / "dynamic",
        state=mw / "watcher",
    )
    return JobContext(name="dbcheck", type="dbcheck", paths=paths, args=args)


@pytest.mark.asyncio
async def test_job_run_returns_corrupt_list(data: Path, tmp_path: Path) -> None:
    """The job runs in a thread, writes the logs and lists corrupt databases in its result."""
    make_db(data / "good.db", rows=100)
    corrupt_db(make_db(data / "bad.db"))
    (data / "maint").write_text('{"message": "checking"}')
    ctx = context(tmp_path, data, check="integrity", optimise=True)
    result = await JOB.run(ctx)
    assert result["corrupt"] == ["bad.db"]
    assert [db["path"] for db in result["databases"]] == ["bad.db", "good.db"]
    assert (ctx.paths.logs / "Optimize_result.log").exists()


@pytest.mark.asyncio
async def test_job_fails_without_data_directory(tmp_path: Path) -> None:
    """A missing database directory is a ``JobFailed`` naming it, not an empty success."""
    ctx = context(tmp_path, tmp_path / "mw" / "data")
    with pytest.raises(JobFailed) as caught:
        await JOB.run(ctx)
    assert caught.value.reason == "data_missing"


def test_job_attributes_and_default_args() -> None:
    """dbcheck holds maintenance, may be retried, and defaults to integrity, hold, optimise."""
    assert JOB.maintenance_default is True and JOB.retry_safe is True
    assert JOB.check_args({}) == {"check": "integrity", "on_corruption": "hold", "optimise": True}
    assert JOB.check_args({"check": "quick", "on_corruption": "release", "optimise": "false"}) == {
        "check": "quick",
        "on_corruption": "release",
        "optimise": False,
    }


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ({"check": "full"}, "check"),
        ({"on_corruption": "ignore"}, "on_corruption"),
        ({"optimise": "maybe"}, "optimise"),
        ({"optimise": 1}, "optimise"),
        ({"optimize": True}, "optimize"),
    ],
)
def test_check_args_rejects_bad_values(args: dict[str, Any], word: str) -> None:
    """Bad values and unknown keys raise ``ArgumentError`` naming the argument."""
    with pytest.raises(ArgumentError, match=word):
        JOB.check_args(args)


def test_empty_report_is_ok() -> None:
    """``CheckReport`` with no databases is ok and has nothing corrupt."""
    report = CheckReport(at(1), at(2), "integrity", ())
    assert report.corrupt == () and report.to_dict()["databases"] == []


@pytest.mark.skipif(not Path(SQLITE_CLI).exists(), reason=f"{SQLITE_CLI} is not installed")
def test_cli_agrees_on_healthy_database(data: Path) -> None:
    """The ``sqlite3`` CLI and the check agree that a fresh database is ok."""
    path = make_db(data / "app.db", rows=500)
    cli = subprocess.run(
        [SQLITE_CLI, str(path), "PRAGMA integrity_check"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert cli.stdout.strip() == "ok"
    assert check_databases(data, optimise=False).databases[0].ok


DISK_TABLE = [
    # free bytes, expected result (the database is about 64 KiB: VACUUM needs 2 × that)
    (PLENTY, "ok"),
    (11 * 1024 * 1024, "ok"),
    (10 * 1024 * 1024 - 1, "below_floor"),
    (0, "below_floor"),
]


@pytest.mark.parametrize(("free", "expected"), DISK_TABLE)
def test_disk_step_is_logged_with_its_figures(
    data: Path, tmp_path: Path, free: int, expected: str
) -> None:
    """The disk-capacity check is its own step with its figures in the log, ok or not."""
    size = make_db(data / "app.db", rows=500).stat().st_size
    report = check_databases(data, optimise=True, free_space=lambda _p: free)
    assert report.disk is not None and report.disk.result == expected
    assert (report.disk.free, report.disk.floor) == (free, 10 * 1024 * 1024)
    assert report.disk.vacuum_needs == 2 * size and report.disk.total > 0
    logs = tmp_path / "logs"
    write_logs(logs, report)
    line = next(
        x for x in (logs / "Maintenance_result.log").read_text().splitlines() if " check.disk " in x
    )
    assert f"result={expected} free={free} total=" in line
    assert f"floor={10 * 1024 * 1024} vacuum_needs={2 * size}" in line
    assert report.to_dict()["disk"]["result"] == expected
    assert "DISK     " + expected in format_report(report)


def test_disk_step_low_when_vacuum_would_not_fit(data: Path) -> None:
    """Above the floor but under 2 × the largest database, the disk step says ``low``."""
    size = make_db(data / "app.db", rows=500).stat().st_size
    free = 10 * 1024 * 1024 + 1
    big = data / "big.db"
    make_db(big, rows=10)
    with big.open("ab") as f:  # a database larger than half the free space (header intact)
        f.truncate(free // 2 + size)
    report = check_databases(data, optimise=False, free_space=lambda _p: free)
    assert report.disk is not None and report.disk.result == "low"
