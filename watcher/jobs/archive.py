"""The ``archive`` job: move files last modified before a date into a read-only ``back<ID>``.

Files under ``mw/data`` and ``mw/file`` whose modification time is before local midnight
at the start of ``before`` move to ``mw/back<ID>/data/…`` and ``mw/back<ID>/file/…``
(``ID`` one more than the largest existing, from 1), keeping their relative paths. Then
the manifest is written and everything in ``back<ID>`` is made read-only (files 0444,
directories 0555). Directories left empty in the live tree stay: the application may
expect them.

Never moved: the maint file; SQLite databases and their ``-wal``/``-shm``/``-journal``
files, whatever their age. A database is live state, not a document: an old modification
time only means nobody wrote to it lately, the application still opens it, and moving it
(or moving it without its ``-wal``) would lose data or make the application start an
empty one. Databases are recognised by name (``*.db``, ``*.sqlite``, ``*.sqlite3`` in any
case, which covers an empty database) and by the SQLite header
(``watcher.jobs.sqlitefiles``); they and their side files are counted in the result.

If anything fails or the job is cancelled, the files already moved are moved back and the
new directory is removed. Nothing to archive means no new directory.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio.to_thread

from watcher.jobs.backup import ARCHIVE_DIR
from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed, Progress
from watcher.jobs.manifest import (
    Entry,
    Meter,
    entry_for,
    hash_file,
    raise_if_cancelled,
    reject_unknown,
    remove_tree,
    verify_manifest,
    write_manifest,
)
from watcher.jobs.space import require_space, tree_size
from watcher.jobs.sqlitefiles import is_database, is_side_file

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class _Move:
    """A file to archive: where it is, where it goes under ``back<ID>``, its mode and size."""

    src: Path
    rel: str
    mode: int
    size: int


def cutoff(day: date, tz: tzinfo | None) -> float:
    """The epoch time of midnight starting ``day`` in ``tz`` (system local time unless IANA)."""
    if isinstance(tz, ZoneInfo):
        return datetime.combine(day, time(), tz).timestamp()
    return datetime.combine(day, time()).timestamp()


def next_archive_id(archive_root: Path) -> int:
    """One more than the largest ``back<ID>`` in ``archive_root`` (1 when there is none)."""
    if not archive_root.is_dir():
        return 1
    ids = [int(m[1]) for p in archive_root.iterdir() if (m := ARCHIVE_DIR.fullmatch(p.name))]
    return max(ids, default=0) + 1


def archive(
    paths: DataPaths,
    before: date,
    *,
    now: datetime,
    progress: Callable[[Progress], None] = lambda _p: None,
    cancelled: threading.Event | None = None,
) -> dict[str, Any]:
    """Move files older than ``before`` into a new read-only ``back<ID>``; the job's core."""
    workspaces = sorted(paths.files.glob("ws*")) if paths.files.is_dir() else []
    needed = 2 * tree_size(paths.data) + sum(tree_size(ws) for ws in workspaces if ws.is_dir())
    require_space(needed, paths.archive_root, "archive")
    moves, databases = _select(paths, cutoff(before, now.tzinfo))
    result: dict[str, Any] = {"before": before.isoformat(), "skipped_databases": databases}
    if not moves:
        return {**result, "archive": None, "id": None, "files": 0, "bytes": 0}
    ident = next_archive_id(paths.archive_root)
    root = paths.archive_root / f"back{ident}"
    entries = _fill(root, moves, now, progress, cancelled or threading.Event())
    make_read_only(root)
    total = sum(e.size for e in entries)
    return {**result, "archive": str(root), "id": ident, "files": len(entries), "bytes": total}


def _select(paths: DataPaths, older_than: float) -> tuple[list[_Move], int]:
    """The files to move, and how many database files were left alone."""
    moves: list[_Move] = []
    databases = 0
    for base, prefix in ((paths.data, "data"), (paths.files, "file")):
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                src = Path(dirpath, name)
                st = os.lstat(src)
                if src == paths.maint_file or not stat.S_ISREG(st.st_mode):
                    continue
                if is_side_file(name) or is_database(src):
                    databases += 1
                elif st.st_mtime < older_than:
                    rel = f"{prefix}/{src.relative_to(base).as_posix()}"
                    moves.append(_Move(src, rel, st.st_mode, st.st_size))
    return moves, databases


def _fill(
    root: Path,
    moves: list[_Move],
    now: datetime,
    progress: Callable[[Progress], None],
    stop: threading.Event,
) -> list[Entry]:
    """Move the files into ``root`` and write its manifest; undo everything on failure."""
    done: list[tuple[Path, Path]] = []
    meter = Meter(progress, len(moves), sum(m.size for m in moves), "archive")
    root.mkdir()
    try:
        entries = [_move(root, move, done, meter, stop) for move in moves]
        meter.flush()
        write_manifest(root, entries, "archive", now)
        problems = verify_manifest(root, content=False)
        if problems:
            raise JobFailed("verify_failed", f"archive failed its check: {problems[0]}")
    except BaseException as exc:
        _put_back(done, root)
        if isinstance(exc, OSError):
            raise JobFailed("archive_failed", f"archiving into {root} failed: {exc}") from exc
        raise
    return entries


def _move(
    root: Path, move: _Move, done: list[tuple[Path, Path]], meter: Meter, stop: threading.Event
) -> Entry:
    """Move one file into the archive and describe it for the manifest."""
    raise_if_cancelled(stop, "archive")
    dst = root / move.rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(move.src, dst)
    done.append((move.src, dst))
    size, digest = hash_file(dst)
    meter.add(1, size)
    return entry_for(root, dst, size, digest, move.mode)


def _put_back(done: list[tuple[Path, Path]], root: Path) -> None:
    """Move archived files back where they came from and remove the archive directory."""
    for src, dst in reversed(done):
        shutil.move(dst, src)
    remove_tree(root)


def make_read_only(root: Path) -> None:
    """Files 0444 and directories 0555 throughout ``root`` (``root`` itself last)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(Path(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


class ArchiveJob:
    """Moves old files out of the live tree into a read-only archive with a manifest."""

    maintenance_default: bool = True
    retry_safe: bool = False
    path_args: tuple[str, ...] = ()

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``before``: a date ``YYYY-MM-DD`` (required), normalised to that string."""
        reject_unknown(args, ("before",))
        return {"before": _date_arg(args.get("before")).isoformat()}

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        """Run the archive in a worker thread."""
        args = self.check_args(ctx.args)
        work = functools.partial(
            archive,
            ctx.paths,
            date.fromisoformat(args["before"]),
            now=ctx.now(),
            progress=ctx.progress,
            cancelled=ctx.cancelled,
        )
        return await anyio.to_thread.run_sync(work)


def _date_arg(value: object) -> date:
    """``before`` as a date, from ``"YYYY-MM-DD"`` or a TOML date."""
    if value is None:
        raise ArgumentError("before: required (a date, YYYY-MM-DD)")
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ArgumentError(f"before: expected a date YYYY-MM-DD, got {value!r}")


JOB = ArchiveJob()
