"""The ``archive`` job (退避): rows dated before a day move into a read-only ``mw/back<ID>``.

Only what ``[[archive.tables]]`` names is touched: for each table, the rows whose date
column is before ``before`` (and, with ``space = "ws1"``, whose space column is that mail
space) are copied into ``back<ID>/data/<database>`` (same schema), the attachments those
rows name move from ``mw/file/ws<N>/…`` to ``back<ID>/file/ws<N>/…`` (copied instead when
a row that stays names the same file), then the rows are deleted from the live database
in one transaction per table. No other file ever leaves live data.

Crash safety: a journal (``<archive_root>/.archive-journal.json``, written atomically)
records the plan before anything changes. The archive is built as ``.back<ID>.partial``;
the rename to ``back<ID>`` is the commit point. Before it, a recovery moves the
attachments back and removes the partial directory (the old state); after it, a recovery
deletes the rows still in live data (the finished state). ``recover`` runs at the start
of every archive job, so re-running the interrupted archive completes or undoes it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import posixpath
import re
import shutil
import stat
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from watcher.config import ArchiveConfig
from watcher.jobs.archivedb import (
    Selection,
    attachment_names,
    copy_rows,
    count_rows,
    delete_rows,
    period_start,
    selection,
)
from watcher.jobs.archives import INFO
from watcher.jobs.backup import ARCHIVE_DIR
from watcher.jobs.base import (
    ArgumentError,
    DataPaths,
    JobContext,
    JobFailed,
    MissingArgument,
    Progress,
)
from watcher.jobs.manifest import (
    MANIFEST_NAME,
    Entry,
    Meter,
    entry_for,
    hash_file,
    raise_if_cancelled,
    reject_unknown,
    remove_tree,
    write_manifest,
)
from watcher.jobs.space import require_space, tree_size
from watcher.system.atomic import fsync_dir, remove_durably, sync_filesystem, write_atomic
from watcher.system.immutable import set_immutable

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SPACE = re.compile(r"ws\d+")
_PARTIAL = re.compile(r"\.back(\d+)\.partial")
JOURNAL = ".archive-journal.json"


def next_archive_id(archive_root: Path) -> int:
    """One more than the largest ``back<ID>`` (or partial one) in ``archive_root``, from 1."""
    if not archive_root.is_dir():
        return 1
    ids = [
        int(m[1])
        for p in archive_root.iterdir()
        if (m := ARCHIVE_DIR.fullmatch(p.name) or _PARTIAL.fullmatch(p.name))
    ]
    return max(ids, default=0) + 1


def archive(
    paths: DataPaths,
    before: date,
    *,
    now: datetime,
    config: ArchiveConfig,
    space: str | None = None,
    progress: Callable[[Progress], None] = lambda _p: None,
    cancelled: threading.Event | None = None,
) -> dict[str, Any]:
    """Archive the configured tables' rows before ``before``; the job's core."""
    stop = cancelled or threading.Event()
    recovered = recover(paths, immutable=config.immutable)
    result: dict[str, Any] = {"before": before.isoformat(), "space": space}
    if recovered is not None:
        result["recovered"] = recovered
    plan = _plan(paths, before, space, now, config)
    if not plan:
        return {**result, "archive": None, "id": None, "rows": 0, "attachments": 0}
    workspaces = sorted(paths.files.glob("ws*")) if paths.files.is_dir() else []
    needed = 2 * tree_size(paths.data) + sum(tree_size(ws) for ws in workspaces if ws.is_dir())
    require_space(needed, paths.archive_root, "archive")
    ident = next_archive_id(paths.archive_root)
    moves, copies = _attachments(paths, [sel for sel, _rows in plan])
    journal: dict[str, Any] = {
        "id": ident,
        "before": before.isoformat(),
        "space": space,
        "created": now.isoformat(),
        "tables": [{**sel.to_dict(), "rows": rows} for sel, rows in plan],
        "moves": sorted(moves),
        "copies": sorted(copies),
    }
    _write_journal(paths, journal)
    try:
        info = _build(paths, journal, now, progress, stop)
    except BaseException:
        if not _final(paths, ident).is_dir():  # past the commit point a re-run completes it
            _roll_back(paths, journal)
        raise
    return {**result, **_finish(paths, journal, info, config.immutable)}


def _plan(
    paths: DataPaths, before: date, space: str | None, now: datetime, config: ArchiveConfig
) -> list[tuple[Selection, int]]:
    """The tables with rows to archive, and how many each."""
    plan = []
    for table in config.tables:
        sel = selection(table, before, space, now.tzinfo)
        live = paths.data / table.database
        if sel is None or not live.is_file():
            continue
        rows = count_rows(live, sel)
        if rows:
            plan.append((sel, rows))
    return plan


def _partial(paths: DataPaths, ident: int) -> Path:
    return paths.archive_root / f".back{ident}.partial"


def _final(paths: DataPaths, ident: int) -> Path:
    return paths.archive_root / f"back{ident}"


def _write_journal(paths: DataPaths, journal: Mapping[str, Any]) -> None:
    paths.archive_root.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.archive_root / JOURNAL, json.dumps(journal).encode())


def _build(
    paths: DataPaths,
    journal: dict[str, Any],
    now: datetime,
    progress: Callable[[Progress], None],
    stop: threading.Event,
) -> dict[str, Any]:
    """Fill ``.back<ID>.partial``, then rename it to ``back<ID>`` (the commit point).

    The attachments are carried in a second thread while this one copies the rows: the
    copy runs inside SQLite (which lets go of the GIL) and the carrying is file-system
    calls and hashing, so on two cores the attachments cost (almost) no time of the
    maintenance window. Only this thread reports progress (the runner's hand-over to the
    event loop works from the job's own worker thread).
    """
    root = _partial(paths, journal["id"])
    root.mkdir(mode=0o700)
    sels = [(Selection.from_dict(_sel_doc(t)), int(t["rows"])) for t in journal["tables"]]
    halt = threading.Event()  # the copy failed or was cancelled: the carrying stops too
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-files") as pool:
        carrying = pool.submit(_carry, paths, root, journal, stop, halt)
        try:
            tables = _copy_tables(paths, root, sels, now, progress, stop)
            carried = carrying.result()
        finally:
            halt.set()
    meter = Meter(progress, len(carried.digests), 0, "archive: attachments")
    meter.add(len(carried.digests), carried.total)
    meter.flush()
    info = {
        "id": journal["id"],
        "space": journal["space"],
        "before": journal["before"],
        "created": journal["created"],
        "tables": [
            {**t, "bytes": (root / "data" / str(t["database"])).stat().st_size} for t in tables
        ],
        "attachments": len(carried.digests),
        "attachment_bytes": carried.total,
    }
    (root / INFO).write_text(json.dumps(info, indent=1) + "\n")
    _seal(root, now, carried)
    os.rename(root, _final(paths, journal["id"]))
    fsync_dir(paths.archive_root)
    return info


def _copy_tables(
    paths: DataPaths,
    root: Path,
    sels: list[tuple[Selection, int]],
    now: datetime,
    progress: Callable[[Progress], None],
    stop: threading.Event,
) -> list[dict[str, Any]]:
    """Copy every selected table's rows into ``root/data``; per table what was copied."""
    meter = Meter(progress, len(sels), sum(r for _s, r in sels), "archive: copying rows")
    tables = []
    for sel, _rows in sels:
        raise_if_cancelled(stop, "archive")
        back = root / "data" / sel.database
        rows = copy_rows(paths.data / sel.database, back, sel, stop)
        tables.append(
            {
                "database": sel.database,
                "table": sel.table,
                "rows": rows,
                "from": period_start(back, sel, now.tzinfo),
            }
        )
        meter.add(1, rows)
    meter.flush()
    return tables


def _sel_doc(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k != "rows"}


def _attachments(paths: DataPaths, sels: list[Selection]) -> tuple[set[str], set[str]]:
    """Attachments of the rows to archive: those to move, and those a staying row also names.

    Names are normalised (``ws1/./a`` is ``ws1/a``) so no file is carried twice; a name that
    is not a regular file inside a ``mw/file/ws<N>`` directory is left alone.
    """
    wanted: set[str] = set()
    staying: set[str] = set()
    for sel in sels:
        archived, kept = attachment_names(paths.data / sel.database, sel)
        wanted |= archived
        staying |= {posixpath.normpath(rel) for rel in kept}
    files = os.fspath(paths.files)
    safe = {rel for rel in map(_attachment, wanted) if rel and _is_file(files, rel)}
    return safe - staying, safe & staying


def _attachment(rel: str) -> str:
    """``rel`` normalised when it names a path inside a ``ws<N>`` directory, else ``""``."""
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts:
        return ""
    norm = posixpath.normpath(rel)
    head, sep, _rest = norm.partition("/")
    return norm if sep and _SPACE.fullmatch(head) else ""


def _is_file(files: str, rel: str) -> bool:
    """Whether ``files/rel`` is a regular file (one lstat: a symlink is not)."""
    try:
        return stat.S_ISREG(os.lstat(f"{files}/{rel}").st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class Carried:
    """What ``_carry`` put into ``root/file``: digests by path in the archive, directories made."""

    digests: dict[str, tuple[int, str]]
    directories: set[str]

    @property
    def total(self) -> int:
        return sum(size for size, _digest in self.digests.values())


def _carry(
    paths: DataPaths,
    root: Path,
    journal: Mapping[str, Any],
    stop: threading.Event,
    halt: threading.Event,
) -> Carried:
    """Move (or copy) the attachments into ``root/file``, hash each and make it read-only."""
    items = [(rel, True) for rel in journal["moves"]] + [(rel, False) for rel in journal["copies"]]
    files, dest = os.fspath(paths.files), os.fspath(root / "file")
    digests: dict[str, tuple[int, str]] = {}
    made: set[str] = set()
    for rel, move in items:
        if stop.is_set() or halt.is_set():
            raise JobFailed("cancelled", "archive cancelled")
        src, dst = f"{files}/{rel}", f"{dest}/{rel}"
        parent = os.path.dirname(dst)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if move:
            os.rename(src, dst)
        else:
            shutil.copy2(src, dst)
        digests[f"file/{rel}"] = hash_file(dst)
        os.chmod(dst, 0o444)
    return Carried(digests, made)


def _with_parents(directories: set[str], top: str) -> set[str]:
    """``directories`` (all under ``top``) and every directory between them and ``top``."""
    found: set[str] = set()
    for directory in directories:
        while directory != top and directory not in found:
            found.add(directory)
            directory = os.path.dirname(directory)
    return found


def _seal(root: Path, now: datetime, carried: Carried) -> None:
    """Manifest over everything in ``root``, read-only bits, then all of it flushed to disk.

    The attachments were hashed (and made 0444) as they were carried; the databases and
    the info file are hashed here. One ``syncfs`` of the filesystem holding ``root``
    instead of an fsync per file and per directory (thousands for the attachments, each a
    journal commit) makes the archive databases (written with ``synchronous = OFF``), the
    copies, the moved attachments' new directory entries (and their removal from
    ``mw/file``, on the same filesystem since they were renamed), the manifest and the
    modes durable before the commit rename.
    """
    entries = [Entry(path, size, digest, 0o444) for path, (size, digest) in carried.digests.items()]
    top = os.fspath(root)
    directories = _with_parents(carried.directories, top)
    for dirpath, dirs, names in os.walk(top):
        if dirpath == top:
            dirs[:] = [d for d in dirs if d != "file"]  # the carried part: entries made above
        for name in names:
            path = Path(dirpath, name)
            size, digest = hash_file(path)
            entries.append(entry_for(root, path, size, digest, 0o444))
            os.chmod(path, 0o444)
        directories.add(dirpath)
    write_manifest(root, entries, "archive", now)
    os.chmod(root / MANIFEST_NAME, 0o444)
    for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
        os.chmod(directory, 0o555)  # deepest first, ``root`` itself last
    sync_filesystem(root)


def _finish(
    paths: DataPaths, journal: dict[str, Any], info: Mapping[str, Any], immutable: bool
) -> dict[str, Any]:
    """After the commit: delete the archived rows from live data, seal, drop the journal."""
    journal["phase"] = "delete"
    _write_journal(paths, journal)
    deleted = 0
    for table in journal["tables"]:
        sel = Selection.from_dict(_sel_doc(table))
        deleted += delete_rows(paths.data / sel.database, sel, int(table["rows"]))
    root = _final(paths, journal["id"])
    problem = set_immutable(root, True) if immutable else "not asked (archive.immutable = false)"
    remove_durably(paths.archive_root / JOURNAL)
    return {
        "archive": str(root),
        "id": journal["id"],
        "rows": sum(int(t["rows"]) for t in journal["tables"]),
        "deleted": deleted,
        "tables": info.get("tables", []),
        "attachments": info.get("attachments", 0),
        "attachment_bytes": info.get("attachment_bytes", 0),
        "immutable": problem is None,
        "immutable_problem": problem,
    }


def _roll_back(paths: DataPaths, journal: Mapping[str, Any]) -> None:
    """Undo an archive that did not reach its commit point: attachments back, partial gone."""
    root = _partial(paths, journal["id"])
    if root.is_dir():
        for dirpath, _dirs, _names in os.walk(root):
            os.chmod(dirpath, 0o700)
        for rel in journal.get("moves", []):
            src, dst = paths.files / rel, root / "file" / rel
            if dst.is_file() and not src.exists():
                src.parent.mkdir(parents=True, exist_ok=True)
                os.rename(dst, src)
        for rel in journal.get("moves", []):
            fsync_dir((paths.files / rel).parent)
        remove_tree(root)
    remove_durably(paths.archive_root / JOURNAL)


def recover(paths: DataPaths, *, immutable: bool = False) -> dict[str, Any] | None:
    """Complete or undo an interrupted archive; what was done, or ``None`` if none was."""
    _remove_journal_temps(paths.archive_root)
    try:
        journal = json.loads((paths.archive_root / JOURNAL).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise JobFailed("archive_failed", f"archive journal unreadable: {exc}") from exc
    if _final(paths, journal["id"]).is_dir():
        info = json.loads((_final(paths, journal["id"]) / INFO).read_text())
        done = _finish(paths, journal, info, immutable)
        return {"id": journal["id"], "action": "completed", "rows": done["rows"]}
    _roll_back(paths, journal)
    return {"id": journal["id"], "action": "rolled_back"}


def _remove_journal_temps(archive_root: Path) -> None:
    """A kill inside ``write_atomic`` of the journal leaves its temp file: never data, remove."""
    for leftover in archive_root.glob(f".{JOURNAL}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def make_read_only(root: Path) -> None:
    """Files 0444 and directories 0555 throughout ``root`` (``root`` itself last)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(Path(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


class ArchiveJob:
    """Moves old rows (and their attachments) into a read-only archive with a manifest."""

    maintenance_default: bool = True
    retry_safe: bool = False
    path_args: tuple[str, ...] = ()

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``before``: a date ``YYYY-MM-DD`` (required); ``space``: a mail space ``ws<N>``."""
        reject_unknown(args, ("before", "space"))
        space = args.get("space")
        if space is not None and not (isinstance(space, str) and _SPACE.fullmatch(space)):
            raise ArgumentError(f"space: expected a mail space like ws1, got {space!r}")
        checked: dict[str, Any] = {"before": _date_arg(args.get("before")).isoformat()}
        if space is not None:
            checked["space"] = space
        return checked

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        """Run the archive in a worker thread."""
        args = self.check_args(ctx.args)
        work = functools.partial(
            archive,
            ctx.paths,
            date.fromisoformat(args["before"]),
            now=ctx.now(),
            config=ctx.archive,
            space=args.get("space"),
            progress=ctx.progress,
            cancelled=ctx.cancelled,
        )
        return await anyio.to_thread.run_sync(work)


def _date_arg(value: object) -> date:
    """``before`` as a date, from ``"YYYY-MM-DD"`` or a TOML date."""
    if value is None:
        raise MissingArgument("before: required (a date, YYYY-MM-DD)")
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ArgumentError(f"before: expected a date YYYY-MM-DD, got {value!r}")


JOB = ArchiveJob()
