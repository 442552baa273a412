"""Backup and restore jobs on real files and real SQLite databases."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import watcher.jobs.space
from watcher.jobs import backup as backup_mod
from watcher.jobs import restore as restore_mod
from watcher.jobs.backup import JOB as BACKUP
from watcher.jobs.backup import backup
from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed, Progress
from watcher.jobs.manifest import (
    MANIFEST_NAME,
    Entry,
    copy_hashed,
    hash_file,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from watcher.jobs.restore import JOB as RESTORE
from watcher.jobs.restore import restore

NOW = datetime(2026, 11, 26, 4, 50, 43, tzinfo=UTC)
MAINT = '{"message": "restoring", "holds": []}'


def make_paths(root: Path) -> DataPaths:
    """The default layout under ``root``."""
    mw = root / "mw"
    return DataPaths(
        data_dir=root,
        maint_file=mw / "data" / "maint",
        data=mw / "data",
        files=mw / "file",
        archive_root=mw,
        logs=mw / "log" / "sched" / "dynamic",
        state=mw / "watcher",
    )


def make_db(path: Path, rows: list[str], wal: bool = False) -> None:
    """A database with one table ``t(name)`` holding ``rows``."""
    with sqlite3.connect(path) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t(name TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
    conn.close()


def db_rows(path: Path) -> list[str]:
    """The rows of table ``t`` in a copy of ``path`` (opening in place would add side files)."""
    copy = path.with_name(path.name + ".probe")
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM t ORDER BY rowid")]
    finally:
        conn.close()
        copy.unlink()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    """A data directory with two databases, files, an archive and the maint file."""
    p = make_paths(tmp_path / "app")
    (p.files / "ws1" / "sub").mkdir(parents=True)
    p.data.mkdir(parents=True)
    make_db(p.data / "main.db", ["alice", "bob"])
    make_db(p.data / "mail.sqlite", ["m1", "m2", "m3"], wal=True)
    (p.data / "settings.json").write_text('{"theme": "dark"}')
    (p.files / "ws1" / "a.txt").write_text("attachment a")
    (p.files / "ws1" / "sub" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    archived = p.archive_root / "back1" / "data"
    archived.mkdir(parents=True)
    (archived / "old.txt").write_text("old")
    for path, mode in ((archived / "old.txt", 0o444), (archived, 0o555), (archived.parent, 0o555)):
        path.chmod(mode)
    p.maint_file.write_text(MAINT)
    return p


@pytest.fixture
def writer(paths: DataPaths) -> Iterator[sqlite3.Connection]:
    """An open connection to ``mail.sqlite`` with committed rows in the WAL and an open write."""
    conn = sqlite3.connect(paths.data / "mail.sqlite", isolation_level=None)
    conn.execute("INSERT INTO t VALUES ('m4')")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES ('uncommitted')")
    yield conn
    conn.rollback()
    conn.close()


def run_backup(paths: DataPaths, dest: Path, keep: int = 7, now: datetime = NOW) -> Path:
    """Back up ``paths`` into ``dest`` and return the set directory."""
    return Path(backup(paths, dest, keep, now=now, durable=False)["set"])


def test_backup_set_is_complete_and_verified(
    paths: DataPaths, writer: sqlite3.Connection, tmp_path: Path
) -> None:
    """A backup copies databases (with a writer open), files and archives and verifies."""
    result = backup(paths, tmp_path / "dest", 7, now=NOW)
    root = Path(result["set"])
    assert root.name == "20261126T045043Z" and root.is_dir()
    assert verify_manifest(root) == []
    kind, entries = read_manifest(root)
    listed = {e.path for e in entries}
    assert kind == "backup" and result["files"] == len(entries) == 6
    assert result["bytes"] == sum(e.size for e in entries)
    assert {"mw/data/main.db", "mw/file/ws1/sub/b.bin", "mw/back1/data/old.txt"} <= listed
    assert "mw/data/maint" not in listed
    assert not any(p.name.endswith(("-wal", "-shm", "-journal")) for p in root.rglob("*"))
    assert db_rows(root / "mw/data/mail.sqlite") == ["m1", "m2", "m3", "m4"]
    assert db_rows(root / "mw/data/main.db") == ["alice", "bob"]
    assert (root / "mw/back1/data/old.txt").stat().st_mode & 0o777 == 0o444


@pytest.mark.asyncio
async def test_backup_job_runs_through_the_protocol(paths: DataPaths, tmp_path: Path) -> None:
    """The job object normalises its arguments, runs in a thread and reports progress."""
    seen: list[Progress] = []
    args = {"dest": str(tmp_path / "dest"), "keep": "2"}
    ctx = JobContext("nightly", "backup", paths, args, progress=seen.append, now=lambda: NOW)
    result = await BACKUP.run(ctx)
    assert Path(result["set"]).parent == tmp_path / "dest"
    assert seen[-1].files_done == seen[-1].files_total == result["files"]
    assert BACKUP.maintenance_default and BACKUP.retry_safe and BACKUP.path_args == ("dest",)


def test_keep_prunes_oldest_sets_and_stale_partials(paths: DataPaths, tmp_path: Path) -> None:
    """Only the newest ``keep`` complete sets survive; stale ``.partial`` sets go, others stay."""
    dest = tmp_path / "dest"
    (dest / "20200101T000000Z.partial").mkdir(parents=True)
    (dest / "notes").mkdir()
    sets = [run_backup(paths, dest, keep=2, now=NOW + timedelta(hours=h)) for h in range(3)]
    assert sorted(p.name for p in dest.iterdir()) == sorted([sets[1].name, sets[2].name, "notes"])


def test_same_second_sets_get_a_suffix(paths: DataPaths, tmp_path: Path) -> None:
    """Two backups in the same second make two sets instead of colliding."""
    first, second = run_backup(paths, tmp_path / "d"), run_backup(paths, tmp_path / "d")
    assert (first.name, second.name) == ("20261126T045043Z", "20261126T045043Z-1")


def test_insufficient_space_is_refused_with_the_numbers(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination without room for the sources is refused before anything is written."""
    monkeypatch.setattr(watcher.jobs.space, "free_bytes", lambda _p: 1000)
    with pytest.raises(JobFailed) as info:
        run_backup(paths, tmp_path / "dest")
    assert info.value.reason == "insufficient_space"
    assert info.value.details["free"] == 1000
    assert info.value.details["needed"] > 3 * 1024 * 1024
    assert not (tmp_path / "dest").exists()


def test_dest_inside_a_source_is_refused(paths: DataPaths) -> None:
    """A destination under ``mw/data`` would copy the backup into itself."""
    with pytest.raises(JobFailed) as info:
        run_backup(paths, paths.data / "backups")
    assert info.value.reason == "invalid_dest"


def test_cancelled_backup_leaves_no_set(paths: DataPaths, tmp_path: Path) -> None:
    """A cancelled backup removes its partial set."""
    stop = threading.Event()
    stop.set()
    with pytest.raises(JobFailed) as info:
        backup(paths, tmp_path / "dest", 7, now=NOW, cancelled=stop, durable=False)
    assert info.value.reason == "cancelled"
    assert list((tmp_path / "dest").iterdir()) == []


Watch = Callable[[int, int, int], None]


def record_steps(
    monkeypatch: pytest.MonkeyPatch, after_first: Callable[[], None] = lambda: None
) -> list[int]:
    """The pages remaining after each backup step, as the progress callback sees them."""
    remaining: list[int] = []
    real = backup_mod._backup_watch

    def recording(src: Path, stop: threading.Event) -> Watch:
        watch = real(src, stop)

        def step(status: int, left: int, total: int) -> None:
            remaining.append(left)
            if len(remaining) == 1:
                after_first()
            watch(status, left, total)

        return step

    monkeypatch.setattr(backup_mod, "_backup_watch", recording)
    return remaining


def test_cancel_stops_a_database_copy_between_steps(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database is copied in steps, and a cancel ends the copy after the step at hand."""
    monkeypatch.setattr(backup_mod, "BACKUP_PAGES", 1)
    remaining = record_steps(monkeypatch)
    stop = threading.Event()
    stop.set()
    with pytest.raises(JobFailed) as info:
        backup_mod._copy_database(paths.data / "main.db", tmp_path / "copy.db", stop)
    assert info.value.reason == "cancelled"
    assert len(remaining) == 1 and remaining[0] > 0


def test_database_copy_is_one_snapshot_across_steps(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write between two steps neither restarts the copy nor gets into it."""
    db = paths.data / "mail.sqlite"  # WAL: a writer proceeds while the copy reads

    def write() -> None:
        with sqlite3.connect(db) as conn:
            conn.executemany("INSERT INTO t VALUES (?)", [("late" + "x" * 500,)] * 50)
        conn.close()

    monkeypatch.setattr(backup_mod, "BACKUP_PAGES", 1)
    remaining = record_steps(monkeypatch, write)
    backup_mod._copy_database(db, tmp_path / "copy.db", threading.Event())
    assert len(remaining) >= 2 and remaining == sorted(remaining, reverse=True)
    assert db_rows(tmp_path / "copy.db") == ["m1", "m2", "m3"]
    with closing(sqlite3.connect(db)) as conn:  # the write itself went through
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (53,)


def test_hashing_stops_on_cancel(tmp_path: Path) -> None:
    """Copying and hashing a (large) file end with ``cancelled`` when the job is told to stop."""
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 100)
    stop = threading.Event()
    stop.set()
    for work in (
        lambda: copy_hashed(src, tmp_path / "copy.bin", stop=stop),
        lambda: hash_file(src, stop=stop),
    ):
        with pytest.raises(JobFailed) as info:
            work()
        assert info.value.reason == "cancelled"


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ({}, "dest"),
        ({"dest": "relative/dir"}, "dest"),
        ({"dest": 5}, "dest"),
        ({"dest": "/b", "keep": 0}, "keep"),
        ({"dest": "/b", "keep": True}, "keep"),
        ({"dest": "/b", "keep": "x"}, "keep"),
        ({"dest": "/b", "kepe": 3}, "kepe"),
    ],
)
def test_backup_check_args_names_the_bad_argument(args: dict[str, object], word: str) -> None:
    """Bad or missing backup arguments raise ``ArgumentError`` naming the argument."""
    with pytest.raises(ArgumentError, match=word):
        BACKUP.check_args(args)


def test_backup_check_args_normalises() -> None:
    """``keep`` defaults to 7 and digit strings become integers."""
    assert BACKUP.check_args({"dest": "/b/"}) == {"dest": "/b", "keep": 7}
    assert BACKUP.check_args({"dest": "/b", "keep": "3"})["keep"] == 3


def damage(paths: DataPaths) -> None:
    """Drop a table and overwrite a file in the live data."""
    with sqlite3.connect(paths.data / "main.db") as conn:
        conn.execute("DROP TABLE t")
    conn.close()
    (paths.files / "ws1" / "a.txt").write_text("overwritten")


def test_restore_puts_the_backup_back(paths: DataPaths, tmp_path: Path) -> None:
    """Restore swaps the set in, keeps the damaged originals as ``*_bak`` and the maint file."""
    root = run_backup(paths, tmp_path / "dest")
    damage(paths)
    result = restore(paths, root, now=NOW)
    assert db_rows(paths.data / "main.db") == ["alice", "bob"]
    assert (paths.files / "ws1" / "a.txt").read_text() == "attachment a"
    assert paths.maint_file.read_text() == MAINT
    data_bak, file_bak = Path(result["data_bak"]), Path(result["file_bak"])
    assert data_bak.name == "data_bak" and file_bak.name == "file_bak"  # the manual's names
    assert (file_bak / "ws1" / "a.txt").read_text() == "overwritten"
    assert not (data_bak / "maint").exists()
    assert result["files"] == 5 and result["from"] == str(root)
    assert not list(paths.archive_root.glob("*.restore.*"))


@pytest.mark.asyncio
async def test_restore_job_runs_through_the_protocol(paths: DataPaths, tmp_path: Path) -> None:
    """The restore job object runs in a thread and returns its result."""
    root = run_backup(paths, tmp_path / "dest")
    ctx = JobContext("r", "restore", paths, {"from": str(root)}, now=lambda: NOW)
    result = await RESTORE.run(ctx)
    assert result["data_bak"] is not None and RESTORE.path_args == ("from",)
    assert RESTORE.maintenance_default and not RESTORE.retry_safe


def test_restore_without_atomic_exchange_still_swaps(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the filesystem cannot exchange directories, plain renames do the swap."""
    root = run_backup(paths, tmp_path / "dest")
    damage(paths)
    monkeypatch.setattr(restore_mod, "exchange", lambda _a, _b: False)
    restore(paths, root, now=NOW)
    assert db_rows(paths.data / "main.db") == ["alice", "bob"]
    assert paths.maint_file.read_text() == MAINT


def test_restore_into_missing_file_dir(paths: DataPaths, tmp_path: Path) -> None:
    """A missing live ``mw/file`` is simply created from the set, with no ``file_bak``."""
    root = run_backup(paths, tmp_path / "dest")
    shutil.rmtree(paths.files)
    result = restore(paths, root, now=NOW)
    assert result["file_bak"] is None
    assert (paths.files / "ws1" / "a.txt").read_text() == "attachment a"


def tamper_overwrite(root: Path) -> None:
    """Same size, different bytes."""
    (root / "mw/file/ws1/a.txt").write_text("attachment X")


def tamper_truncate(root: Path) -> None:
    """A shorter file."""
    (root / "mw/file/ws1/a.txt").write_text("a")


def tamper_delete(root: Path) -> None:
    """A missing file."""
    (root / "mw/data/settings.json").unlink()


def tamper_extra(root: Path) -> None:
    """A file the manifest does not list."""
    (root / "mw/data/main.db-wal").write_bytes(b"x")


def tamper_manifest(root: Path) -> None:
    """A manifest that is not JSON."""
    (root / MANIFEST_NAME).write_text("{")


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (tamper_overwrite, "hash mismatch"),
        (tamper_truncate, "size mismatch"),
        (tamper_delete, "missing"),
        (tamper_extra, "extra file"),
        (tamper_manifest, "unreadable"),
    ],
)
def test_restore_refuses_a_damaged_set(
    paths: DataPaths, tmp_path: Path, tamper: Callable[[Path], None], problem: str
) -> None:
    """A set that fails verification is refused and live data is not touched."""
    root = run_backup(paths, tmp_path / "dest")
    tamper(root)
    damage(paths)
    before = snapshot(paths.data_dir)
    with pytest.raises(JobFailed) as info:
        restore(paths, root, now=NOW)
    assert info.value.reason == "manifest_invalid"
    assert problem in info.value.message
    assert snapshot(paths.data_dir) == before
    assert sorted(p.name for p in paths.archive_root.iterdir()) == ["back1", "data", "file"]


def fail_second_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the swap of the second directory (``mw/file``) fail."""
    real, calls = restore_mod.exchange, []

    def exchange(a: Path, b: Path) -> bool:
        calls.append(a)
        if len(calls) == 2:
            raise OSError(5, "injected failure")
        return real(a, b)

    monkeypatch.setattr(restore_mod, "exchange", exchange)


def fail_third_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make staging fail on its third file."""
    real, calls = copy_hashed, []

    def failing_copy(src: Path, dst: Path, *rest: Any) -> tuple[int, str] | None:
        calls.append(src)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(src, dst, *rest)

    monkeypatch.setattr(restore_mod, "copy_hashed", failing_copy)


@pytest.mark.parametrize("inject", [fail_second_exchange, fail_third_copy])
def test_failed_restore_puts_the_originals_back(
    paths: DataPaths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inject: Callable[[pytest.MonkeyPatch], None],
) -> None:
    """A restore failing while staging or half-way through the swap leaves live data as it was."""
    root = run_backup(paths, tmp_path / "dest")
    damage(paths)
    before = snapshot(paths.data_dir)
    inject(monkeypatch)
    with pytest.raises(JobFailed) as info:
        restore(paths, root, now=NOW)
    assert info.value.reason == "restore_failed"
    assert snapshot(paths.data_dir) == before
    assert sorted(p.name for p in paths.archive_root.iterdir()) == ["back1", "data", "file"]


@pytest.mark.parametrize(
    ("args", "word"), [({}, "from"), ({"from": "x"}, "from"), ({"to": "/"}, "to")]
)
def test_restore_check_args_names_the_bad_argument(args: dict[str, object], word: str) -> None:
    """Bad or missing restore arguments raise ``ArgumentError`` naming the argument."""
    with pytest.raises(ArgumentError, match=word):
        RESTORE.check_args(args)


def test_manifest_round_trip_and_unsafe_paths(tmp_path: Path) -> None:
    """A written manifest reads back; a path escaping the root makes it invalid."""
    (tmp_path / "f").write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    write_manifest(tmp_path, [Entry("f", 3, digest, 0o644)], "archive", NOW)
    doc = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert doc["created"] == "2026-11-26T04:50:43Z" and doc["total_bytes"] == 3
    assert read_manifest(tmp_path) == ("archive", [Entry("f", 3, digest, 0o644)])
    assert verify_manifest(tmp_path) == []
    write_manifest(tmp_path, [Entry("../f", 3, digest, 0o644)])
    assert "unsafe path" in verify_manifest(tmp_path)[0]


def test_backup_failure_while_copying_leaves_no_set(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error during the copy becomes ``backup_failed`` and removes the partial set."""

    def broken(*_args: Any, **_kwargs: Any) -> tuple[int, str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backup_mod, "copy_hashed", broken)
    with pytest.raises(JobFailed) as info:
        run_backup(paths, tmp_path / "dest")
    assert info.value.reason == "backup_failed"
    assert list((tmp_path / "dest").iterdir()) == []


def test_maint_file_exists_at_every_step_of_the_swap(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After every rename or exchange of the swap, the maint file is in place."""
    root = run_backup(paths, tmp_path / "dest")
    seen: list[bool] = []
    real_exchange, real_rename = restore_mod.exchange, os.rename

    def exchange(a: Path, b: Path) -> bool:
        done = real_exchange(a, b)
        seen.append(paths.maint_file.exists())
        return done

    def rename(a: str | Path, b: str | Path) -> None:
        real_rename(a, b)
        seen.append(paths.maint_file.exists())

    monkeypatch.setattr(restore_mod, "exchange", exchange)
    monkeypatch.setattr(os, "rename", rename)
    restore(paths, root, now=NOW)
    assert seen == [True] * 4


def operator_releases(paths: DataPaths) -> None:
    """The operator deletes the maint file."""
    paths.maint_file.unlink()


def watcher_rewrites(paths: DataPaths) -> None:
    """watcher replaces the maint file atomically with new content."""
    tmp = paths.maint_file.with_name(".maint.tmp")
    tmp.write_text("updated")
    os.replace(tmp, paths.maint_file)


@pytest.mark.parametrize("hook", ["copy_hashed", "exchange"])
@pytest.mark.parametrize(
    ("change", "expected"), [(operator_releases, None), (watcher_rewrites, "updated")]
)
def test_maint_change_during_restore_is_carried_over(
    paths: DataPaths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[DataPaths], None],
    expected: str | None,
    hook: str,
) -> None:
    """A maint file removed or rewritten while staging or just before the swap stays that way."""
    root = run_backup(paths, tmp_path / "dest")
    real, calls = getattr(restore_mod, hook), []

    def wrapped(a: Path, b: Path, *rest: Any) -> object:
        calls.append(a)
        if len(calls) == 1:
            change(paths)
        return real(a, b, *rest)

    monkeypatch.setattr(restore_mod, hook, wrapped)
    restore(paths, root, now=NOW)
    found = paths.maint_file.read_text() if paths.maint_file.exists() else None
    assert found == expected
    assert not list(paths.archive_root.glob("data_bak*/maint"))


def test_metadata_survives_backup_and_restore(paths: DataPaths, tmp_path: Path) -> None:
    """Permission bits and modification times are kept in the set and after a restore."""
    target = paths.files / "ws1" / "a.txt"
    target.chmod(0o640)
    os.utime(target, (1_000_000_000, 1_000_000_000))
    root = run_backup(paths, tmp_path / "dest")
    copy = root / "mw/file/ws1/a.txt"
    assert (copy.stat().st_mode & 0o777, copy.stat().st_mtime) == (0o640, 1_000_000_000)
    target.write_text("changed")
    restore(paths, root, now=NOW)
    assert (target.stat().st_mode & 0o777, target.stat().st_mtime) == (0o640, 1_000_000_000)


def test_backup_rolls_back_a_hot_journal(paths: DataPaths, tmp_path: Path) -> None:
    """A writer killed mid-transaction leaves a hot journal; the backup has the committed rows."""
    code = (
        "import os, sqlite3\n"
        "c = sqlite3.connect(os.sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=2'); c.execute('BEGIN')\n"
        "c.executemany('INSERT INTO t VALUES (?)', [('x' * 2000,)] * 500)\n"
        "c.execute(\"UPDATE t SET name = 'gone'\")\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(paths.data / "main.db")], check=True)
    assert (paths.data / "main.db-journal").stat().st_size > 0
    root = run_backup(paths, tmp_path / "dest")
    assert db_rows(root / "mw/data/main.db") == ["alice", "bob"]
