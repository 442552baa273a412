"""Archive job on real files: what moves, what stays, read-only result, manifest, IDs."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import watcher.jobs.space
from watcher.jobs import archive as archive_mod
from watcher.jobs.archive import JOB, archive, cutoff
from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed
from watcher.jobs.manifest import hash_file, read_manifest, verify_manifest
from watcher.jobs.space import tree_size

BEFORE = date(2026, 1, 1)
NOW = datetime(2026, 3, 1, 12, 0).astimezone()
OLD = datetime(2025, 12, 31, 23, 0).timestamp()
NEW = datetime(2026, 1, 1, 1, 0).timestamp()


def put(path: Path, content: bytes, mtime: float) -> Path:
    """Write ``path`` and set its modification time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    """A data dir with old and new files, old databases and an old maint file."""
    mw = tmp_path / "mw"
    p = DataPaths(tmp_path, mw / "data" / "maint", mw / "data", mw / "file", mw,
                  mw / "log", mw / "watcher")
    put(p.data / "old.txt", b"old data", OLD)
    put(p.data / "new.txt", b"new data", NEW)
    put(p.files / "ws1" / "old.bin", b"o" * 5000, OLD)
    put(p.files / "ws1" / "sub" / "older.bin", b"p" * 7, OLD - 86400 * 365)
    put(p.files / "ws2" / "new.bin", b"n" * 10, NEW)
    with sqlite3.connect(p.data / "app.db") as conn:
        conn.execute("CREATE TABLE t(x)")
    conn.close()
    os.utime(p.data / "app.db", (OLD, OLD))
    put(p.data / "app.db-wal", b"", OLD)
    put(p.data / "blob", b"SQLite format 3\x00" + bytes(100), OLD)
    put(p.maint_file, b"{}", OLD)
    return p


def test_archive_moves_only_old_files(paths: DataPaths) -> None:
    """Old files move with their relative paths; new files, databases and the maint file stay."""
    result = archive(paths, BEFORE, now=NOW)
    root = paths.archive_root / "back1"
    assert result == {"before": "2026-01-01", "skipped_databases": 3, "archive": str(root),
                      "id": 1, "files": 3, "bytes": 8 + 5000 + 7}
    assert (root / "data" / "old.txt").read_bytes() == b"old data"
    assert (root / "file" / "ws1" / "sub" / "older.bin").read_bytes() == b"p" * 7
    assert (root / "file" / "ws1" / "old.bin").stat().st_mtime == OLD
    assert not (paths.data / "old.txt").exists()
    for stays in ("data/new.txt", "data/app.db", "data/app.db-wal", "data/blob", "data/maint",
                  "file/ws2/new.bin"):
        assert (paths.archive_root / stays).exists(), stays
    assert (paths.files / "ws1" / "sub").is_dir()


def test_databases_are_recognised_in_any_case(paths: DataPaths) -> None:
    """A database named in capitals (even an empty one) and a journal stay, and are counted."""
    put(paths.data / "OLD.DB", b"", OLD)
    put(paths.data / "app.db-journal", b"", OLD)
    result = archive(paths, BEFORE, now=NOW)
    assert (result["skipped_databases"], result["files"]) == (5, 3)
    assert (paths.data / "OLD.DB").exists() and (paths.data / "app.db-journal").exists()


def test_archive_is_read_only_with_a_manifest(paths: DataPaths) -> None:
    """The archive's files are 0444, its directories 0555, and its manifest verifies."""
    root = Path(archive(paths, BEFORE, now=NOW)["archive"])
    kind, entries = read_manifest(root)
    assert kind == "archive"
    assert {e.path for e in entries} == {"data/old.txt", "file/ws1/old.bin",
                                         "file/ws1/sub/older.bin"}
    assert verify_manifest(root) == []
    for path in [root, *root.rglob("*")]:
        expected = 0o555 if path.is_dir() else 0o444
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_archive_ids_increment(paths: DataPaths) -> None:
    """Each archive takes one more than the largest existing ``back<ID>``."""
    (paths.archive_root / "back7").mkdir()
    (paths.archive_root / "backup").mkdir()
    assert archive(paths, BEFORE, now=NOW)["id"] == 8
    put(paths.data / "again.txt", b"x", OLD)
    assert archive(paths, BEFORE, now=NOW)["archive"] == str(paths.archive_root / "back9")


def test_nothing_old_makes_no_archive(paths: DataPaths) -> None:
    """With no file older than the date, no directory is created."""
    result = archive(paths, date(2000, 1, 1), now=NOW)
    assert (result["archive"], result["files"]) == (None, 0)
    assert not list(paths.archive_root.glob("back*"))


def test_insufficient_space_is_refused_with_the_numbers(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archive needs twice ``mw/data`` plus the workspaces free, and says so when refused."""
    monkeypatch.setattr(watcher.jobs.space, "free_bytes", lambda _p: 100)
    needed = 2 * tree_size(paths.data) + tree_size(paths.files / "ws1") + tree_size(
        paths.files / "ws2"
    )
    with pytest.raises(JobFailed) as info:
        archive(paths, BEFORE, now=NOW)
    assert info.value.reason == "insufficient_space"
    assert (info.value.details["needed"], info.value.details["free"]) == (needed, 100)
    assert (paths.data / "old.txt").exists()


def test_failure_moves_files_back(paths: DataPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error half-way puts the moved files back and removes the new directory."""
    calls: list[Path] = []

    def failing_hash(path: Path) -> tuple[int, str]:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return hash_file(path)

    monkeypatch.setattr(archive_mod, "hash_file", failing_hash)
    with pytest.raises(JobFailed) as info:
        archive(paths, BEFORE, now=NOW)
    assert info.value.reason == "archive_failed"
    assert (paths.data / "old.txt").read_bytes() == b"old data"
    assert (paths.files / "ws1" / "old.bin").exists()
    assert not (paths.archive_root / "back1").exists()


@pytest.mark.parametrize(
    "tz", [ZoneInfo("Asia/Tokyo"), ZoneInfo("America/New_York"), ZoneInfo("UTC")]
)
def test_cutoff_is_local_midnight(tz: ZoneInfo) -> None:
    """The cut-off is midnight at the start of the date in the configured zone."""
    assert cutoff(BEFORE, tz) == datetime(2026, 1, 1, tzinfo=tz).timestamp()


def test_cutoff_without_a_zone_name_uses_system_time() -> None:
    """A fixed-offset zone (from ``astimezone()``) falls back to the system's local midnight."""
    fixed = timezone(timedelta(hours=5))
    assert cutoff(BEFORE, fixed) == datetime(2026, 1, 1).timestamp()


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ({}, "before"),
        ({"before": "2026-13-01"}, "before"),
        ({"before": "20260101"}, "before"),
        ({"before": datetime(2026, 1, 1)}, "before"),
        ({"before": 20260101}, "before"),
        ({"before": "2026-01-01", "after": "x"}, "after"),
    ],
)
def test_check_args_names_the_bad_argument(args: dict[str, object], word: str) -> None:
    """Bad or missing arguments raise ``ArgumentError`` naming the argument."""
    with pytest.raises(ArgumentError, match=word):
        JOB.check_args(args)


def test_check_args_accepts_a_toml_date() -> None:
    """A TOML date and an ISO string normalise to the same string."""
    assert JOB.check_args({"before": BEFORE}) == JOB.check_args({"before": " 2026-01-01 "})
    assert JOB.check_args({"before": BEFORE}) == {"before": "2026-01-01"}


@pytest.mark.asyncio
async def test_job_runs_through_the_protocol(paths: DataPaths) -> None:
    """The job object runs the archive in a thread and returns counts and bytes."""
    ctx = JobContext("a", "archive", paths, {"before": "2026-01-01"}, now=lambda: NOW)
    result = await JOB.run(ctx)
    assert (result["files"], result["id"]) == (3, 1)
    assert JOB.maintenance_default and not JOB.retry_safe and JOB.path_args == ()
