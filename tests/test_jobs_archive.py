"""Record-level archive on a mail-shaped data dir: rows, attachments, IDs, read-only, recovery."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import watcher.jobs.space
from watcher.config import ArchiveConfig
from watcher.demo import MAIL_TABLES, add_mail_data
from watcher.jobs import archive as archive_mod
from watcher.jobs.archive import JOB, JOURNAL, archive, recover
from watcher.jobs.archivedb import cutoff
from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed
from watcher.jobs.manifest import read_manifest, verify_manifest

BEFORE = date(2025, 1, 1)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONFIG = ArchiveConfig(tables=MAIL_TABLES, immutable=False)


def rows(db: Path, sql: str) -> list[Any]:
    """The rows a query returns (read-only open)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    """A mail-shaped data dir: 2024-01-01 … 2025-12-31, attachments in ws1 and ws2."""
    mw = tmp_path / "mw"
    add_mail_data(mw, 300, date(2024, 1, 1), 730)
    (mw / "data" / "maint").write_text("{}")
    return DataPaths(
        tmp_path, mw / "data" / "maint", mw / "data", mw / "file", mw, mw / "log", mw / "watcher"
    )


def snapshot(paths: DataPaths) -> dict[str, Any]:
    """Every live row and every file under mw/file, for comparing states."""
    data = paths.data
    files = sorted(
        p.relative_to(paths.files).as_posix() for p in paths.files.rglob("*") if p.is_file()
    )
    return {
        "mails": rows(data / "mail.db", "SELECT * FROM mails ORDER BY id"),
        "calls": rows(data / "phone.db", "SELECT * FROM calls ORDER BY id"),
        "customers": rows(data / "address.db", "SELECT * FROM customers ORDER BY id"),
        "files": files,
    }


def assert_fails_leaving_the_old_state(
    paths: DataPaths, error: type[BaseException], match: str | None = None
) -> None:
    """The archive raises ``error``; every live row and file is as before and no archive,
    partial or journal is left (``mw`` holds only ``data`` and ``file``)."""
    before = snapshot(paths)
    with pytest.raises(error, match=match):
        archive(paths, BEFORE, now=NOW, config=CONFIG)
    assert snapshot(paths) == before
    assert sorted(p.name for p in paths.archive_root.iterdir()) == ["data", "file"]


def test_rows_before_the_date_move_with_their_attachments(paths: DataPaths) -> None:
    """Old rows are in back1 and gone from live, new rows stay, attachments follow rows."""
    before = snapshot(paths)
    result = archive(paths, BEFORE, now=NOW, config=CONFIG)
    back = paths.archive_root / "back1"
    assert result["id"] == 1 and result["archive"] == str(back)
    old_mails = [r for r in before["mails"] if r[2] < "2025-01-01"]
    assert rows(back / "data" / "mail.db", "SELECT * FROM mails ORDER BY id") == old_mails
    live = rows(paths.data / "mail.db", "SELECT * FROM mails ORDER BY id")
    assert live == [r for r in before["mails"] if r[2] >= "2025-01-01"] and live
    cut = cutoff(BEFORE, UTC)
    assert all(r[2] < cut for r in rows(back / "data" / "phone.db", "SELECT * FROM calls"))
    assert all(r[2] >= cut for r in rows(paths.data / "phone.db", "SELECT * FROM calls"))
    assert rows(paths.data / "address.db", "SELECT min(updated) FROM customers")[0][0] >= (
        "2025-01-01"
    )
    for _id, ws, _when, _subject, att in old_mails:
        if att:
            assert (back / "file" / ws / att).is_file() and not (paths.files / ws / att).exists()
    for _id, ws, _when, _subject, att in live:
        if att:
            assert (paths.files / ws / att).is_file()
    assert (paths.data / "settings.ini").is_file() and paths.maint_file.is_file()
    assert result["rows"] == len(old_mails) + sum(
        t["rows"] for t in result["tables"] if t["table"] != "mails"
    )
    assert verify_manifest(back) == [] and read_manifest(back)[0] == "archive"
    info = json.loads((back / "archive.json").read_text())
    assert info["before"] == "2025-01-01" and info["tables"][0]["from"].startswith("2024-01-01")
    assert not (paths.archive_root / JOURNAL).exists()


def test_archive_schema_and_indexes_are_kept(paths: DataPaths) -> None:
    """The archive database has the live table's definition and its indexes."""
    archive(paths, BEFORE, now=NOW, config=CONFIG)
    schema = "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'mails' ORDER BY name"
    assert rows(paths.archive_root / "back1/data/mail.db", schema) == rows(
        paths.data / "mail.db", schema
    )


def test_one_space_only(paths: DataPaths) -> None:
    """With space = ws1 only ws1's rows move; tables without a space column are left alone."""
    archive(paths, BEFORE, now=NOW, config=CONFIG, space="ws1")
    back = paths.archive_root / "back1"
    assert {r[0] for r in rows(back / "data/mail.db", "SELECT space FROM mails")} == {"ws1"}
    assert {r[0] for r in rows(back / "data/phone.db", "SELECT space FROM calls")} == {1}
    assert not (back / "data" / "address.db").exists()
    old_ws2 = rows(
        paths.data / "mail.db",
        "SELECT count(*) FROM mails WHERE space = 'ws2' AND received < '2025'",
    )
    assert old_ws2[0][0] > 0
    assert json.loads((back / "archive.json").read_text())["space"] == "ws1"


def test_second_archive_gets_a_new_id(paths: DataPaths) -> None:
    """A later date archives the rows left into back2; nothing to do makes no directory."""
    first = archive(paths, BEFORE, now=NOW, config=CONFIG)
    again = archive(paths, BEFORE, now=NOW, config=CONFIG)
    second = archive(paths, date(2025, 7, 1), now=NOW, config=CONFIG)
    assert (first["id"], again["id"], second["id"]) == (1, None, 2)
    assert (paths.archive_root / "back2" / "data" / "mail.db").is_file()


def test_archive_is_read_only(paths: DataPaths) -> None:
    """Files 0444, directories 0555; chattr reported when not asked."""
    result = archive(paths, BEFORE, now=NOW, config=CONFIG)
    back = paths.archive_root / "back1"
    for dirpath, _dirs, names in os.walk(back):
        assert os.stat(dirpath).st_mode & 0o777 == 0o555
        for name in names:
            assert os.stat(Path(dirpath, name)).st_mode & 0o777 == 0o444
    assert result["immutable"] is False and "not asked" in result["immutable_problem"]


def test_shared_attachment_is_copied_not_moved(paths: DataPaths) -> None:
    """An attachment an old and a new row both name stays live and is copied into back1."""
    with sqlite3.connect(paths.data / "mail.db") as conn:
        conn.execute("UPDATE mails SET attachment = 'att/mail-1.txt' WHERE id = 300")
    conn.close()
    archive(paths, BEFORE, now=NOW, config=CONFIG)
    assert (paths.files / "ws2" / "att" / "mail-1.txt").is_file()
    assert (paths.archive_root / "back1/file/ws2/att/mail-1.txt").is_file()


def test_one_file_named_two_ways_is_carried_once(paths: DataPaths) -> None:
    """``att/./x`` and ``att/x`` are one file: moved once, or copied when a staying row names it."""
    with sqlite3.connect(paths.data / "mail.db") as conn:
        conn.execute("UPDATE mails SET attachment = 'att/./mail-2.txt' WHERE id = 5")
        conn.execute("UPDATE mails SET attachment = 'att//mail-1.txt' WHERE id = 300")
    conn.close()
    result = archive(paths, BEFORE, now=NOW, config=CONFIG)
    back = paths.archive_root / "back1"
    assert (back / "file/ws1/att/mail-2.txt").is_file()
    assert not (paths.files / "ws1/att/mail-2.txt").exists()
    assert (paths.files / "ws2/att/mail-1.txt").is_file()  # a staying row names it
    assert (back / "file/ws2/att/mail-1.txt").is_file()
    assert (paths.files / "ws1/att/mail-4.txt").is_file()  # no row names it any more
    assert result["attachments"] == sum(1 for p in (back / "file").rglob("*.txt"))
    assert verify_manifest(back) == []


def test_a_failure_while_carrying_attachments_restores_the_old_state(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attachment that cannot be read (in the carrying thread) undoes the whole archive."""
    real = archive_mod.hash_file

    def unreadable(path: str | os.PathLike[str], **kw: Any) -> tuple[int, str]:
        if os.fspath(path).endswith("/mail-7.txt"):
            raise OSError(5, "Input/output error")
        return real(path, **kw)

    monkeypatch.setattr(archive_mod, "hash_file", unreadable)
    assert_fails_leaving_the_old_state(paths, OSError, "Input/output")


def test_a_failed_row_copy_stops_the_carrying_and_restores_the_old_state(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that fails while attachments are being carried leaves rows and files as before."""
    real = archive_mod.copy_rows

    def failing(live: Path, *args: Any) -> int:
        if live.name == "phone.db":
            raise JobFailed("archive_failed", "disk I/O error")
        return real(live, *args)

    monkeypatch.setattr(archive_mod, "copy_rows", failing)
    assert_fails_leaving_the_old_state(paths, JobFailed, "disk I/O")


def test_files_not_named_by_rows_never_move(paths: DataPaths) -> None:
    """Old files no row names, and everything without config, stay in live data."""
    stray = paths.files / "ws1" / "stray.bin"
    stray.write_bytes(b"x")
    os.utime(stray, (0, 0))
    archive(paths, BEFORE, now=NOW, config=ArchiveConfig())
    assert not (paths.archive_root / "back1").exists()
    archive(paths, BEFORE, now=NOW, config=CONFIG)
    assert stray.is_file() and (paths.data / "settings.ini").is_file()


def test_failure_before_the_commit_restores_the_old_state(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while sealing leaves rows, attachments and no archive, as before."""

    def broken(*_a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive_mod, "_seal", broken)
    assert_fails_leaving_the_old_state(paths, OSError)


def test_failure_after_the_commit_is_completed_by_recovery(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while deleting leaves the journal; recovery deletes the archived rows."""
    real = archive_mod._finish

    def crash(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(archive_mod, "_finish", crash)
    with pytest.raises(KeyboardInterrupt):
        archive(paths, BEFORE, now=NOW, config=CONFIG)
    monkeypatch.setattr(archive_mod, "_finish", real)
    assert (paths.archive_root / JOURNAL).exists()
    done = recover(paths)
    assert done is not None and done["action"] == "completed"
    assert rows(paths.data / "mail.db", "SELECT count(*) FROM mails WHERE received < '2025'") == [
        (0,)
    ]
    assert recover(paths) is None


def test_insufficient_space_is_refused_with_the_numbers(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free space under 2× mw/data + Σ ws* refuses the archive with both numbers."""
    monkeypatch.setattr(watcher.jobs.space, "free_bytes", lambda _p: 10)
    with pytest.raises(JobFailed) as caught:
        archive(paths, BEFORE, now=NOW, config=CONFIG)
    assert caught.value.reason == "insufficient_space" and caught.value.details["free"] == 10


@pytest.mark.parametrize("tz", [ZoneInfo("Asia/Tokyo"), ZoneInfo("UTC")])
def test_cutoff_is_local_midnight(tz: ZoneInfo) -> None:
    """Unix date columns are compared with midnight in the configured zone."""
    assert cutoff(BEFORE, tz) == datetime(2025, 1, 1, tzinfo=tz).timestamp()
    assert cutoff(BEFORE, UTC) == datetime(2025, 1, 1).timestamp()


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ({}, "required"),
        ({"before": "2025-13-01"}, "YYYY-MM-DD"),
        ({"x": 1}, "unknown"),
        ({"before": "2025-01-01", "space": "mail"}, "ws1"),
    ],
)
def test_check_args_names_the_bad_argument(args: dict[str, object], word: str) -> None:
    """Bad or missing arguments are one clear error naming the argument."""
    with pytest.raises(ArgumentError, match=word):
        JOB.check_args(args)


@pytest.mark.asyncio
async def test_job_runs_through_the_protocol(paths: DataPaths) -> None:
    """The job takes the archive tables from its context and reports rows and attachments."""
    ctx = JobContext(
        "archive",
        "archive",
        paths,
        {"before": "2025-01-01", "space": "ws2"},
        now=lambda: NOW,
        archive=CONFIG,
    )
    result = await JOB.run(ctx)
    assert result["id"] == 1 and result["space"] == "ws2" and result["attachments"] > 0


def test_the_partial_archive_is_flushed_sealed_before_the_commit_rename(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one filesystem flush sees the finished partial archive (manifest, 0444) unrenamed."""
    seen: list[tuple[bool, bool, int]] = []
    real = archive_mod.sync_filesystem

    def spy(path: Path) -> None:
        partial = paths.archive_root / ".back1.partial"
        mode = (partial / "data" / "mail.db").stat().st_mode & 0o777
        seen.append(
            ((partial / "manifest.json").is_file(), (partial.parent / "back1").exists(), mode)
        )
        real(path)

    monkeypatch.setattr(archive_mod, "sync_filesystem", spy)
    archive(paths, BEFORE, now=NOW, config=CONFIG)
    assert seen == [(True, False, 0o444)]
    assert verify_manifest(paths.archive_root / "back1") == []
