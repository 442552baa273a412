"""The ``backup`` job: copy ``mw/data``, ``mw/file`` and ``mw/back<ID>`` into a verified set.

A set is ``<dest>/<UTC timestamp>/`` (``20261126T045043Z``, ``-1``, ``-2`` … on a clash)
holding the sources at their paths relative to the data directory (``mw/data/x.db``) and
a manifest. It is built as ``<name>.partial``, the manifest written and checked, the
filesystem flushed, and only then renamed: a crash never leaves a set that looks complete.
Then the oldest complete sets beyond ``keep`` and stale ``.partial`` sets are removed.

SQLite databases (recognised by their header) are copied through the online backup API,
so a database with an open writer still yields a consistent snapshot; other files are
copied in one pass that hashes what it writes. The maint file and SQLite's ``-wal``,
``-shm`` and ``-journal`` files are never copied.

A database is copied ``BACKUP_PAGES`` pages at a time, so a cancel (timeout, shutdown)
stops a large one mid-copy rather than after it. The whole copy runs in one read
transaction on the source: one snapshot however many steps, where separate steps would
each see the latest writes and restart the copy after every one of them.

Hashes are computed from the bytes as they are written, so the check before the rename
reads no content: it reloads the manifest and checks each file's presence and size and that
nothing else is there (``verify_manifest(content=False)``); re-hashing what was just
written would only re-read the page cache. Restore re-hashes everything before it starts.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread

from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed, Progress
from watcher.jobs.manifest import (
    Entry,
    Meter,
    copy_hashed,
    entry_for,
    hash_file,
    path_arg,
    raise_if_cancelled,
    reject_unknown,
    remove_tree,
    verify_manifest,
    write_manifest,
)
from watcher.jobs.space import require_space, tree_size
from watcher.jobs.sqlitefiles import (
    SQLITE_HEADER,
    error_code,
    is_side_file,
    settle_hot_journal,
)
from watcher.system.atomic import fsync_dir, sync_filesystem
from watcher.system.filemodes import chmod_copied

SET_NAME = re.compile(r"(\d{8}T\d{6}Z)(?:-(\d+))?")
PARTIAL = ".partial"
ARCHIVE_DIR = re.compile(r"back(\d+)")
#: How long a database may stay locked by a writer before the backup gives up.
BUSY_LIMIT = 30.0
#: Seconds between attempts while a database is locked.
BUSY_SLEEP = 0.05
#: Pages copied per backup step (4 MiB at the default page size); a cancel is seen between.
BACKUP_PAGES = 1024
#: Files copied at once: file creation dominates on many small files and overlaps well.
COPY_THREADS = 4


@dataclass(frozen=True)
class _Item:
    """A regular file to copy: its source and its path inside the set."""

    src: Path
    dst: Path
    meta: os.stat_result


def set_layout(paths: DataPaths) -> dict[Path, str]:
    """Each source directory that exists, mapped to its relative path inside a set."""
    roots = [paths.data, paths.files, *archive_dirs(paths.archive_root)]
    return {root: set_path(root, paths.data_dir) for root in roots if root.is_dir()}


def set_path(root: Path, data_dir: Path) -> str:
    """Where ``root`` lives inside a set: relative to the data dir, else under ``external/``."""
    try:
        return root.relative_to(data_dir).as_posix()
    except ValueError:
        return f"external/{root.name}"


def archive_dirs(archive_root: Path) -> list[Path]:
    """The ``back<ID>`` directories under ``archive_root``, by ID."""
    if not archive_root.is_dir():
        return []
    found = [
        p
        for p in archive_root.iterdir()
        if ARCHIVE_DIR.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
    ]
    return sorted(found, key=lambda p: int(p.name[4:]))


def backup(
    paths: DataPaths,
    dest: Path,
    keep: int,
    *,
    now: datetime,
    progress: Callable[[Progress], None] = lambda _p: None,
    cancelled: threading.Event | None = None,
    durable: bool = True,
) -> dict[str, Any]:
    """Make a verified backup set under ``dest`` and prune old ones; the job's core.

    ``durable`` flushes the destination filesystem before the set is marked complete
    (benchmarks turn it off to compare with a plain ``cp -a``).
    """
    stop = cancelled or threading.Event()
    layout = set_layout(paths)
    _refuse_dest_inside(dest, layout)
    require_space(sum(tree_size(root) for root in layout), dest, "backup")
    dest.mkdir(parents=True, exist_ok=True)
    name = _new_set_name(dest, now)
    partial = dest / (name + PARTIAL)
    partial.mkdir(mode=0o700)
    try:
        entries = _fill(partial, layout, paths.maint_file, progress, stop)
        write_manifest(partial, entries, "backup", now)
        problems = verify_manifest(partial, content=False)
        if problems:
            raise JobFailed(
                "verify_failed", f"backup set failed its check: {problems[0]}", problems=problems
            )
        if durable:
            sync_filesystem(partial)
        final = dest / name
        os.rename(partial, final)
        fsync_dir(dest)
    except OSError as exc:
        remove_tree(partial)
        raise JobFailed("backup_failed", f"backup into {partial} failed: {exc}") from exc
    except BaseException:
        remove_tree(partial)
        raise
    pruned, errors = prune(dest, keep)
    result = {"set": str(final), "files": len(entries), "bytes": sum(e.size for e in entries)}
    return {**result, "pruned": pruned, **({"prune_errors": errors} if errors else {})}


def _refuse_dest_inside(dest: Path, layout: Mapping[Path, str]) -> None:
    """A destination inside a source would copy the backup into itself."""
    real = Path(os.path.realpath(dest))
    for root in layout:
        if real.is_relative_to(os.path.realpath(root)):
            raise JobFailed("invalid_dest", f"backup dest {dest} lies inside {root}")


def _new_set_name(dest: Path, now: datetime) -> str:
    """A set name from ``now`` in UTC, suffixed when that second is already taken."""
    base = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 0
    while (dest / name).exists() or (dest / (name + PARTIAL)).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _fill(
    partial: Path,
    layout: Mapping[Path, str],
    maint: Path,
    progress: Callable[[Progress], None],
    stop: threading.Event,
) -> list[Entry]:
    """Copy every source file into ``partial`` and return the manifest entries."""
    dirs: list[tuple[Path, Path]] = []
    items: list[_Item] = []
    for root, rel in layout.items():
        _plan(root, partial / rel, maint, dirs, items)
    for _src, dst in dirs:
        dst.mkdir(parents=True, exist_ok=True)
    meter = Meter(progress, len(items), sum(i.meta.st_size for i in items), "backup")
    entries = _copy_all(partial, items, meter, stop)
    for src, dst in reversed(dirs):
        copy_meta(src, dst)
    return entries


def _copy_all(
    partial: Path, items: list[_Item], meter: Meter, stop: threading.Event
) -> list[Entry]:
    """Copy the files on a few threads (creating files is slow and overlaps well); in order.

    On the first error the files not yet started are dropped and the running ones finish
    before the error propagates, so nothing writes into the set after it is removed.
    """

    def copy(item: _Item) -> Entry:
        raise_if_cancelled(stop, "backup")
        size, digest = _copy_file(item, stop)
        return entry_for(partial, item.dst, size, digest, item.meta.st_mode)

    pool = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="watcher-backup")
    entries = []
    try:
        for entry in pool.map(copy, items):
            entries.append(entry)
            meter.add(1, entry.size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    meter.flush()
    return entries


def _plan(
    root: Path, target: Path, maint: Path, dirs: list[tuple[Path, Path]], items: list[_Item]
) -> None:
    """List the directories and regular files under ``root`` that belong in a set."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        there = target / here.relative_to(root)
        dirs.append((here, there))
        for name in sorted(filenames):
            src = here / name
            if src == maint or is_side_file(name):
                continue
            st = os.lstat(src)
            if stat.S_ISREG(st.st_mode):
                items.append(_Item(src, there / name, st))


def _copy_file(item: _Item, stop: threading.Event) -> tuple[int, str]:
    """Copy one file with its metadata (databases through SQLite); return size and hash."""
    copied = copy_hashed(item.src, item.dst, item.meta, unless=SQLITE_HEADER, stop=stop)
    if copied is not None:
        return copied
    _copy_database(item.src, item.dst, stop)
    copy_meta(item.src, item.dst)
    return hash_file(item.dst, stop=stop)


def copy_meta(src: Path, dst: Path) -> None:
    """Ownership (when running as root), then permission bits, times and extended attributes."""
    if os.geteuid() == 0:
        st = os.stat(src)
        os.chown(dst, st.st_uid, st.st_gid)
    shutil.copystat(src, dst)
    chmod_copied(dst)


def _copy_database(src: Path, dst: Path, stop: threading.Event) -> None:
    """Snapshot a live SQLite database into ``dst`` with the online backup API.

    A hot journal left by an interrupted writer is rolled back first, as any writer would
    (a read-only connection cannot, and would fail); the job holds maintenance. The copy
    runs in steps of ``BACKUP_PAGES`` pages inside one read transaction (``_begin_read``);
    after each step the watch raises ``JobFailed`` on a cancel.
    """
    settle_hot_journal(src)
    watch = _backup_watch(src, stop)
    # No busy timeout: a locked database is retried here, where a cancel is seen.
    source = sqlite3.connect(f"file:{quote(os.fspath(src))}?mode=ro", uri=True, timeout=0)
    try:
        _begin_read(source, watch)
        target = sqlite3.connect(dst)
        try:
            # The set is flushed as a whole (or thrown away), so per-database syncs are waste.
            target.execute("PRAGMA journal_mode=OFF")
            target.execute("PRAGMA synchronous=OFF")
            source.backup(target, pages=BACKUP_PAGES, sleep=BUSY_SLEEP, progress=watch)
        finally:
            target.close()
    except sqlite3.Error as exc:
        raise JobFailed("backup_failed", f"database {src} could not be copied: {exc}") from exc
    finally:
        source.close()


def _begin_read(source: sqlite3.Connection, watch: Callable[[int, int, int], None]) -> None:
    """Open the read transaction the whole copy runs in, retrying while the file is locked.

    A step of the backup API takes its own read lock only when the source has none, and a
    write between two such steps restarts the copy (forever, under a steady writer); in
    this transaction every step reads the same snapshot, as one single step would.
    """
    source.execute("BEGIN")
    while True:
        try:
            source.execute("SELECT count(*) FROM sqlite_master").fetchall()
            return
        except sqlite3.OperationalError as exc:
            code = error_code(exc)
            if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            watch(code, -1, -1)
            time.sleep(BUSY_SLEEP)


def _backup_watch(src: Path, stop: threading.Event) -> Callable[[int, int, int], None]:
    """A backup progress callback that aborts on cancellation or a lock held too long."""
    busy_since: list[float] = []

    def watch(status: int, _remaining: int, _total: int) -> None:
        raise_if_cancelled(stop, "backup")
        if status not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            busy_since.clear()
        elif not busy_since:
            busy_since.append(time.monotonic())
        elif time.monotonic() - busy_since[0] > BUSY_LIMIT:
            raise JobFailed("database_busy", f"database {src} stayed locked for {BUSY_LIMIT} s")

    return watch


def _sets(dest: Path, suffix: str = "") -> Iterator[Path]:
    """Directories under ``dest`` named like a set (plus ``suffix``), oldest first."""
    found = []
    for p in dest.iterdir():
        stem = p.name.removesuffix(suffix) if suffix else p.name
        m = SET_NAME.fullmatch(stem)
        if m and p.name.endswith(suffix) and p.is_dir() and not p.is_symlink():
            found.append(((m[1], int(m[2] or 0)), p))
    return (p for _key, p in sorted(found))


def prune(dest: Path, keep: int) -> tuple[list[str], list[str]]:
    """Remove complete sets beyond the newest ``keep`` and every ``.partial`` set.

    Returns what was removed and what could not be (a failed removal does not undo the
    backup that was just made).
    """
    complete = list(_sets(dest))
    removed, errors = [], []
    for path in complete[: max(0, len(complete) - keep)] + list(_sets(dest, PARTIAL)):
        try:
            remove_tree(path)
            removed.append(str(path))
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    return removed, errors


class BackupJob:
    """Copies the data directory's databases, files and archives into a verified set."""

    maintenance_default: bool = True
    retry_safe: bool = True
    path_args: tuple[str, ...] = ("dest",)

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``dest`` (absolute path, required) and ``keep`` (integer ≥ 1, default 7)."""
        reject_unknown(args, ("dest", "keep"))
        return {"dest": path_arg(args, "dest"), "keep": _keep_arg(args.get("keep", 7))}

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        """Run the backup in a worker thread."""
        args = self.check_args(ctx.args)
        work = functools.partial(
            backup,
            ctx.paths,
            Path(args["dest"]),
            args["keep"],
            now=ctx.now(),
            progress=ctx.progress,
            cancelled=ctx.cancelled,
        )
        return await anyio.to_thread.run_sync(work)


def _keep_arg(value: object) -> int:
    """``keep`` as an integer ≥ 1 (digit strings accepted, as the CLI passes them)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"keep: expected an integer of at least 1, got {value!r}")
    return value


JOB = BackupJob()
